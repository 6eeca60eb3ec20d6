//! Codecs: JSON vs MessagePack encode/decode of a ~200-byte struct, through
//! the codecs `Cache` uses.

use std::hint::black_box;
use std::time::Instant;

use cache_core::{Codec, JsonCodec, MsgPackCodec};
use serde::{Deserialize, Serialize};

use crate::harness::interleaved;
use crate::report::Report;
use crate::Options;

pub(crate) const GROUP: &str = "codec";

/// A typical cached row: about 200 bytes of JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Profile {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) email: String,
    pub(crate) active: bool,
    pub(crate) score: f64,
    pub(crate) roles: Vec<String>,
    pub(crate) created_at: u64,
    pub(crate) country: String,
    pub(crate) bio: String,
}

impl Profile {
    pub(crate) fn sample(id: u64) -> Self {
        Profile {
            id,
            name: format!("Ada Lovelace {id}"),
            email: format!("ada.{id}@example.com"),
            active: true,
            score: 97.25,
            roles: vec!["admin".into(), "editor".into()],
            created_at: 1_700_000_000 + id,
            country: "GB".into(),
            bio: "Mathematician; wrote the first published algorithm.".into(),
        }
    }
}

fn ns_per_op(iters: usize, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

/// Runs the group.
pub(crate) fn run(report: &mut Report, opts: &Options) {
    let (iters, reps) = if opts.quick {
        (20_000, 5)
    } else {
        (100_000, 9)
    };
    let value = Profile::sample(123_456);
    let json = JsonCodec.encode(&value).expect("encodes");
    let msgpack = MsgPackCodec.encode(&value).expect("encodes");
    let workload_enc = format!("encode ~{} B struct", json.len());
    let workload_dec = format!("decode ~{} B struct", json.len());
    let cells: [(&str, &str); 4] = [
        (&workload_enc, "json"),
        (&workload_enc, "msgpack"),
        (&workload_dec, "json"),
        (&workload_dec, "msgpack"),
    ];
    let medians = interleaved(cells.len(), reps, |i| match i {
        0 => ns_per_op(iters, || {
            drop(black_box(JsonCodec.encode(black_box(&value))))
        }),
        1 => ns_per_op(iters, || {
            drop(black_box(MsgPackCodec.encode(black_box(&value))))
        }),
        2 => ns_per_op(iters, || {
            drop(black_box(JsonCodec.decode::<Profile>(black_box(&json))))
        }),
        _ => ns_per_op(iters, || {
            drop(black_box(
                MsgPackCodec.decode::<Profile>(black_box(&msgpack)),
            ))
        }),
    });
    for ((workload, imp), m) in cells.iter().zip(medians) {
        report.add(GROUP, workload, imp, "ns_per_op", m);
    }
    report.note(
        GROUP,
        format!(
            "encoded sizes: json {} B, msgpack (named fields) {} B",
            json.len(),
            msgpack.len()
        ),
    );
}
