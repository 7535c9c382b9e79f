use std::io::Write;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;

use crate::batch::Batch;
use crate::config::Encoding;

/// Writes every record of a batch, one per line.
pub(super) fn write_batch(
    out: &mut impl Write,
    batch: &Batch,
    encoding: Encoding,
) -> std::io::Result<()> {
    for record in batch.records() {
        match encoding {
            Encoding::Text => {
                out.write_all(record.value)?;
                out.write_all(b"\n")?;
            }
            Encoding::Json => {
                let line = JsonRecord {
                    key: Bytes::new(record.key),
                    value: Bytes::new(record.value),
                    timestamp: record.timestamp,
                };
                serde_json::to_writer(&mut *out, &line)?;
                out.write_all(b"\n")?;
            }
        }
    }
    Ok(())
}

/// A record as a JSON line. Bytes that are valid UTF-8 are written as a string;
/// anything else as `{"base64": "..."}`, so no byte is lost.
#[derive(Serialize)]
struct JsonRecord<'a> {
    key: Bytes<'a>,
    value: Bytes<'a>,
    timestamp: Option<i64>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Bytes<'a> {
    Text(&'a str),
    Binary { base64: String },
}

impl<'a> Bytes<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::Text(text),
            Err(_) => Self::Binary {
                base64: BASE64.encode(bytes),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use weir_codec::BatchWriter;

    use super::*;

    #[test]
    fn json_lines_keep_binary_bytes() {
        let mut w = BatchWriter::new();
        w.push(b"k", b"v \"q\"", Some(5));
        w.push(&[0xff], b"", None);
        let mut out = Vec::new();
        write_batch(&mut out, &Batch::from_writer(w), Encoding::Json).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"key\":\"k\",\"value\":\"v \\\"q\\\"\",\"timestamp\":5}\n\
             {\"key\":{\"base64\":\"/w==\"},\"value\":\"\",\"timestamp\":null}\n"
        );
    }
}
