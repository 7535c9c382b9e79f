//! `--suite run-path`: the word count a user runs, through `weir run` itself
//! (this binary, as a child process), not through the library: file source
//! over a generated text on disk -> split-words -> word-count -> blackhole,
//! checkpoints every second, with chaining on and off, on each backend.
//!
//! Per run it prints words/s (from the pipeline starting to it finishing, as
//! the daemon logs them), CPU seconds per million words (user + system of
//! the daemon over the same span, from its own accounting, so load on other
//! cores does not count) and the daemon's peak RSS. `--pin` runs the daemon
//! on one core (CPU 0).

use std::fmt::Write as _;
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::{BenchOptions, write_text};

/// One `weir run` of the job.
struct Run {
    words_per_s: f64,
    cpu_per_million: f64,
    peak_rss_bytes: u64,
}

pub(super) fn run_path(
    options: &BenchOptions,
    split: &Path,
    count: &Path,
    dir: &Path,
) -> anyhow::Result<String> {
    let input = dir.join("run-path-words.txt");
    write_text(&input, options.lines, options.vocabulary)?;
    let words = options.lines * 8;
    let mut out = format!(
        "run path: `weir run`, file ({} lines x 8 words `w<n>`, n from a {}-word vocabulary by \
         xorshift64, {} MiB) -> split-words -> word-count -> blackhole, parallelism 1, \
         checkpoints every 1s{}; medians of {}\n",
        options.lines,
        options.vocabulary,
        std::fs::metadata(&input)?.len() >> 20,
        if options.pin { ", pinned to CPU 0" } else { "" },
        options.repeats.max(1),
    );
    let _ = writeln!(
        out,
        "{:>8} {:>9} {:>12} {:>14} {:>10}",
        "backend", "chaining", "words/s", "CPU s/M words", "peak RSS"
    );
    for backend in &options.backends {
        let mut rows: Vec<(bool, Vec<Run>)> = options
            .chaining
            .iter()
            .map(|c| (c == "on", Vec::new()))
            .collect();
        // Alternated, so drift on a shared machine falls on both.
        for _ in 0..options.repeats.max(1) {
            for (chaining, runs) in &mut rows {
                let text = format!(
                    "[daemon]\ndata_dir = {data:?}\nchaining = {chaining}\n\
                     [checkpoint]\ninterval = \"1s\"\n[state]\nbackend = \"{backend}\"\n\
                     [sources.lines]\ntype = \"file\"\npath = {input:?}\n\
                     [operators.split]\nmodule = {split:?}\ninputs = [\"lines\"]\n\
                     [operators.count]\nmodule = {count:?}\ninputs = [\"split\"]\n\
                     [sinks.out]\ntype = \"blackhole\"\ninputs = [\"count\"]\n",
                    data = dir
                        .join(format!("run-path-{backend}-{chaining}"))
                        .display()
                        .to_string(),
                    input = input.display().to_string(),
                    split = split.display().to_string(),
                    count = count.display().to_string(),
                );
                let config = dir.join(format!("run-path-{backend}-{chaining}.toml"));
                std::fs::write(&config, text)?;
                let _ = std::fs::remove_dir_all(dir.join(format!("run-path-{backend}-{chaining}")));
                runs.push(run_once(&config, words, options.pin)?);
            }
        }
        for (chaining, runs) in &mut rows {
            runs.sort_by(|a, b| a.words_per_s.total_cmp(&b.words_per_s));
            let median = &runs[runs.len() / 2];
            let _ = writeln!(
                out,
                "{backend:>8} {:>9} {:>12.0} {:>14.3} {:>7.1} MB",
                if *chaining { "on" } else { "off" },
                median.words_per_s,
                median.cpu_per_million,
                median.peak_rss_bytes as f64 / 1e6,
            );
        }
    }
    Ok(out)
}

/// Runs `weir run --config config` and measures the span between the
/// daemon logging "pipeline running" and "pipeline finished".
fn run_once(config: &Path, words: u64, pin: bool) -> anyhow::Result<Run> {
    let exe = std::env::current_exe().context("cannot find the weir binary")?;
    let mut command = Command::new(exe);
    command
        .args(["--log-format", "json", "run", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if pin {
        pin_to_cpu0(&mut command);
    }
    let mut child = command.spawn().context("cannot start weir run")?;
    let pid = child.id();
    let stderr = child.stderr.take().context("no stderr")?;
    let mut started: Option<(Instant, Duration)> = None;
    let mut finished: Option<Instant> = None;
    let mut moved = None;
    let mut log = Vec::new();
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line?;
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            log.push(line);
            continue;
        };
        match event["fields"]["message"].as_str() {
            Some("pipeline running") => started = Some((Instant::now(), process_cpu(pid)?)),
            Some("pipeline finished") => finished = Some(Instant::now()),
            Some("sink finished") => moved = event["fields"]["records"].as_u64(),
            _ => {}
        }
        log.push(line);
    }
    let (status, usage) = wait4(pid)?;
    // Reaped by wait4: the handle must not wait again.
    drop(child);
    if !status_ok(status) {
        bail!("weir run failed:\n{}", log.join("\n"));
    }
    let (Some((t0, cpu0)), Some(t1)) = (started, finished) else {
        bail!("weir run logged no start or finish:\n{}", log.join("\n"));
    };
    if moved != Some(words) {
        bail!("the sink got {moved:?} records, expected {words}");
    }
    let cpu = usage.cpu.saturating_sub(cpu0);
    let span = t1.duration_since(t0).as_secs_f64();
    Ok(Run {
        words_per_s: words as f64 / span,
        cpu_per_million: cpu.as_secs_f64() / (words as f64 / 1e6),
        peak_rss_bytes: usage.max_rss_bytes,
    })
}

fn pin_to_cpu0(command: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the forked child before exec and only
    // makes one system call on memory it owns; it allocates nothing and
    // takes no lock.
    unsafe {
        command.pre_exec(|| {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// User + system CPU of a running process so far, from `/proc/PID/stat`.
fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold
    // spaces): utime and stime are the 12th and 13th of them.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("a malformed /proc stat line")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("a short /proc stat line")?.parse()?)
    };
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_secs_f64(total as f64 / per_second as f64))
}

struct Usage {
    cpu: Duration,
    max_rss_bytes: u64,
}

/// Waits for child `pid` and returns its status and resource usage.
fn wait4(pid: u32) -> anyhow::Result<(i32, Usage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in; a zeroed one is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = i32::try_from(pid)?;
    // SAFETY: both pointers are to live locals for the duration of the call.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if reaped != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Ok((
        status,
        Usage {
            cpu: time(usage.ru_utime) + time(usage.ru_stime),
            // Linux reports it in KiB.
            max_rss_bytes: (usage.ru_maxrss as u64) * 1024,
        },
    ))
}

fn status_ok(status: i32) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}
