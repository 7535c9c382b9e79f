//! Keyed state through the real binary, on both backends: word count gives exact
//! counts at parallelism 1 and 2, every state kind round-trips, and one key's
//! state is never seen while processing another.

use std::collections::BTreeMap;

use weir_test_artifacts as plugins;

use crate::support::{
    Daemon, Sandbox, WAIT_LIMIT, free_port, http, metric, run, stderr, toml_path, wait_until,
};

const BACKENDS: [&str; 2] = ["heap", "rocksdb"];

/// A deterministic text: `lines` lines of 8 words from a `vocabulary`-word set.
pub(crate) fn text(lines: usize, vocabulary: u64) -> String {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut out = String::new();
    for _ in 0..lines {
        let words: Vec<String> = (0..8)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                format!("w{}", seed % vocabulary)
            })
            .collect();
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

/// Word count's exact output for `input`, sorted: for every word with total
/// count c, the lines `w,1` … `w,c`.
pub(crate) fn exact_counts(input: &str) -> Vec<String> {
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for word in input.split_whitespace() {
        *totals.entry(word).or_default() += 1;
    }
    let mut want: Vec<String> = totals
        .iter()
        .flat_map(|(w, c)| (1..=*c).map(move |i| format!("{w},{i}")))
        .collect();
    want.sort();
    want
}

/// `[state]` for a backend; RocksDB gets a tiny write-back cache so that
/// eviction and write batches happen even in a small test.
fn state_table(backend: &str) -> String {
    match backend {
        "rocksdb" => "[state]\nbackend = \"rocksdb\"\ncache = \"64KiB\"\n".to_owned(),
        _ => format!("[state]\nbackend = \"{backend}\"\n"),
    }
}

fn word_count(sandbox: &Sandbox, backend: &str, parallelism: u32) -> Vec<String> {
    let config = format!(
        "{state}[sources.lines]\ntype = \"file\"\npath = \"input.txt\"\nbatch_size = 100\n\
         [operators.split]\nmodule = {split}\ninputs = [\"lines\"]\n\
         [operators.count]\nmodule = {count}\ninputs = [\"split\"]\nparallelism = {parallelism}\n\
         [sinks.out]\ntype = \"file\"\ninputs = [\"count\"]\npath = \"out-{backend}-{parallelism}.txt\"\n",
        state = state_table(backend),
        split = toml_path(plugins::SPLIT_WORDS),
        count = toml_path(plugins::WORD_COUNT),
    );
    let path = sandbox.write(&format!("wc-{backend}-{parallelism}.toml"), config);
    let out = run("run", &path);
    assert!(
        out.status.success(),
        "{backend} p={parallelism}: {}",
        stderr(&out)
    );
    let mut lines: Vec<String> = sandbox
        .read(&format!("out-{backend}-{parallelism}.txt"))
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[test]
fn word_count_is_exact_on_both_backends_and_parallelisms() {
    let sandbox = Sandbox::new();
    let input = text(3000, 200);
    sandbox.write("input.txt", &input);
    let want = exact_counts(&input);
    for backend in BACKENDS {
        for parallelism in [1, 2] {
            let got = word_count(&sandbox, backend, parallelism);
            assert_eq!(got.len(), want.len(), "{backend} p={parallelism}");
            assert!(
                got == want,
                "{backend} p={parallelism}: output differs from the exact counts"
            );
        }
    }
}

#[test]
fn every_state_kind_round_trips_and_keys_are_isolated() {
    // key command...: runs through key-by, then the state-kinds test plugin.
    let commands = "\
        a set 5\na get\nb get\na append x\na append y\na list\nb list\n\
        a put k 1\na put j 2\na has k\nb has k\na remove k\na has k\na map\na lookup j\n\
        a sum 2\na sum 3\nb sum 7\na avg 1\na avg 4\n\
        a replace p,q\na list\na clear\na get\na list\na map\nb sum 1\nb get\n";
    let want_a = [
        "a:get=5",
        "a:list=x,y",
        "a:has=true",
        "a:has=false",
        "a:map=j=2",
        "a:lookup=2",
        "a:sum=2",
        "a:sum=5",
        "a:avg=1",
        "a:avg=2.5",
        "a:list=p,q",
        "a:get=none",
        "a:list=",
        "a:map=",
    ];
    let want_b = [
        "b:get=none",
        "b:list=",
        "b:has=false",
        "b:sum=7",
        "b:sum=8",
        "b:get=none",
    ];
    for backend in BACKENDS {
        for parallelism in [1, 2] {
            let sandbox = Sandbox::new();
            sandbox.write("commands.txt", commands);
            let config = format!(
                "{state}[sources.commands]\ntype = \"file\"\npath = \"commands.txt\"\nbatch_size = 4\n\
                 [operators.keyed]\nmodule = {key_by}\ninputs = [\"commands\"]\n\
                 [operators.state]\nmodule = {kinds}\ninputs = [\"keyed\"]\nparallelism = {parallelism}\n\
                 [sinks.out]\ntype = \"file\"\ninputs = [\"state\"]\npath = \"out.txt\"\n",
                state = state_table(backend),
                key_by = toml_path(plugins::KEY_BY),
                kinds = toml_path(plugins::STATE_KINDS),
            );
            let path = sandbox.write("weir.toml", config);
            let out = run("run", &path);
            assert!(out.status.success(), "{backend}: {}", stderr(&out));
            let text = sandbox.read("out.txt");
            let for_key = |k: &str| {
                text.lines()
                    .filter(|l| l.starts_with(k))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            };
            assert_eq!(for_key("a:"), want_a, "{backend} p={parallelism}");
            assert_eq!(for_key("b:"), want_b, "{backend} p={parallelism}");
        }
    }
}

#[test]
fn keyed_state_behind_a_non_hash_partition_is_refused_at_run_time() {
    let sandbox = Sandbox::new();
    sandbox.write("input.txt", text(50, 20));
    let config = format!(
        "[sources.lines]\ntype = \"file\"\npath = \"input.txt\"\n\
         [operators.split]\nmodule = {split}\ninputs = [\"lines\"]\n\
         [operators.count]\nmodule = {count}\ninputs = [\"split\"]\nparallelism = 2\npartition = \"round_robin\"\n\
         [sinks.out]\ntype = \"blackhole\"\ninputs = [\"count\"]\n",
        split = toml_path(plugins::SPLIT_WORDS),
        count = toml_path(plugins::WORD_COUNT),
    );
    let path = sandbox.write("weir.toml", config);
    let out = run("run", &path);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("keyed state needs its input partitioned by key"),
        "{}",
        stderr(&out)
    );
}

/// TTL expires on a real clock in a running daemon: a dedupe-within-a-window
/// over a rate-limited generator lets each key pass again once its window has
/// gone by, on both backends.
#[test]
fn state_ttl_expires_while_the_daemon_runs() {
    let sandbox = Sandbox::new();
    for backend in BACKENDS {
        // 50 keys, each every 0.5 s, for 4 s; a window of 1 s. A key passes at
        // its first record and then at its first record a window later:
        // 2 to 4 times in the 3.5 s between its first and last record. A clock
        // frozen at start would let each pass once.
        let config = sandbox.write(
            &format!("ttl-{backend}.toml"),
            format!(
                "{state}[sources.gen]\ntype = \"generator\"\ncount = 400\nrate = 100.0\nkeys = 50\nbatch_size = 1\n\
                 [operators.dedupe]\nmodule = {module}\ninputs = [\"gen\"]\nconfig = {{ window_ms = 1000 }}\n\
                 [sinks.out]\ntype = \"file\"\ninputs = [\"dedupe\"]\npath = \"ttl-{backend}.txt\"\nencoding = \"json\"\n",
                state = state_table(backend),
                module = toml_path(plugins::DEDUPE_TTL),
            ),
        );
        let out = run("run", &config);
        assert!(out.status.success(), "{backend}: {}", stderr(&out));
        let mut passes: BTreeMap<String, usize> = BTreeMap::new();
        for line in sandbox.read(&format!("ttl-{backend}.txt")).lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            *passes
                .entry(record["key"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        assert_eq!(passes.len(), 50, "{backend}: every key passes: {passes:?}");
        assert!(
            passes.values().all(|n| (2..=4).contains(n)),
            "{backend}: each key passes once per window: {passes:?}"
        );
    }
}

#[test]
fn rocksdb_cache_reads_are_counted_so_a_cache_too_small_shows() {
    let sandbox = Sandbox::new();
    let port = free_port();
    // 20,000 keys cycling through a 64 KiB write-back cache: most reads miss
    // it and go to RocksDB.
    let config = sandbox.write(
        "weir.toml",
        format!(
            "[daemon]\ndata_dir = \"var\"\nadmin_address = \"127.0.0.1:{port}\"\n\
             [state]\nbackend = \"rocksdb\"\ncache = \"64KiB\"\n\
             [sources.gen]\ntype = \"generator\"\nkeys = 20000\nrate = 50000\n\
             [operators.count]\nmodule = {count}\ninputs = [\"gen\"]\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"count\"]\n",
            count = toml_path(plugins::WORD_COUNT),
        ),
    );
    let daemon = Daemon::start(&sandbox, "weir", &config, &[]);
    let series = |name: &str| format!("{name}{{instance=\"0\",operator=\"count\"}}");
    let mut scrape = String::new();
    wait_until(WAIT_LIMIT, "cache hits and misses", || {
        scrape = http("GET", port, "/metrics", "").1;
        metric(&scrape, &series("weir_state_cache_misses_total")).is_some_and(|m| m > 20_000.0)
    });
    let hits = metric(&scrape, &series("weir_state_cache_hits_total")).unwrap_or(0.0);
    let misses = metric(&scrape, &series("weir_state_cache_misses_total")).unwrap_or(0.0);
    // Each key's first read misses, and with the keys past the cache so
    // does every read after; the write-back of a batch's counts is read
    // from the cache.
    assert!(misses > hits, "hits {hits}, misses {misses}:\n{scrape}");
    daemon.signal("TERM");
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");
    // The heap backend has no cache, and exports no such series.
    let heap = sandbox.write(
        "heap.toml",
        std::fs::read_to_string(&config).unwrap().replace(
            "backend = \"rocksdb\"\ncache = \"64KiB\"",
            "backend = \"heap\"",
        ),
    );
    let daemon = Daemon::start(&sandbox, "heap", &heap, &[]);
    wait_until(
        crate::support::WAIT_LIMIT,
        "records counted on heap",
        || {
            scrape = http("GET", port, "/metrics", "").1;
            metric(
                &scrape,
                "weir_records_in_total{instance=\"0\",operator=\"count\"}",
            )
            .is_some_and(|n| n > 1_000.0)
        },
    );
    assert!(
        !scrape.contains("weir_state_cache_misses_total{"),
        "{scrape}"
    );
    daemon.signal("TERM");
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");
}
