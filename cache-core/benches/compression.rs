//! Bytes saved and ns per op of `Compressed<JsonCodec>` against plain
//! `JsonCodec` on a 10 KiB JSON value (rows of a report: the repetition
//! real cached JSON has).
//!
//! `cargo bench -p cache-core --features compression --bench compression`
//! (release profile). Prints one table; the figures are medians of 9
//! repetitions.

use std::hint::black_box;
use std::time::Instant;

use cache_core::{Codec, Compressed, JsonCodec};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row {
    id: u32,
    name: String,
    email: String,
    country: String,
    active: bool,
    amount: f64,
}

/// Rows until the JSON text reaches 10 KiB.
fn value() -> Vec<Row> {
    let mut rows = Vec::new();
    let mut id = 0;
    while serde_json::to_vec(&rows).map_or(0, |v| v.len()) < 10 * 1024 {
        rows.push(Row {
            id,
            name: format!("Customer {id}"),
            email: format!("customer.{id}@example.com"),
            country: ["GB", "FR", "DE", "US"][id as usize % 4].into(),
            active: id % 3 != 0,
            amount: f64::from(id) * 12.75,
        });
        id += 1;
    }
    rows
}

/// The median over `reps` runs of `iters` calls of `f`, in ns per call.
fn median_ns(reps: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[reps / 2]
}

fn row<C: Codec>(codec: &C, value: &Vec<Row>) {
    let (reps, iters) = (9, 2_000);
    let bytes = codec.encode(value).expect("encodes");
    assert_eq!(&codec.decode::<Vec<Row>>(&bytes).expect("decodes"), value);
    let encode = median_ns(reps, iters, || {
        black_box(codec.encode(black_box(value)).expect("encodes"));
    });
    let decode = median_ns(reps, iters, || {
        black_box(
            codec
                .decode::<Vec<Row>>(black_box(&bytes))
                .expect("decodes"),
        );
    });
    println!(
        "{:<10} {:>8} {:>12.0} {:>12.0}",
        codec.name(),
        bytes.len(),
        encode,
        decode
    );
}

fn main() {
    let value = value();
    println!(
        "{:<10} {:>8} {:>12} {:>12}",
        "codec", "bytes", "encode ns", "decode ns"
    );
    row(&JsonCodec, &value);
    row(&Compressed::new(JsonCodec), &value);
    let plain = JsonCodec.encode(&value).expect("encodes").len();
    let packed = Compressed::new(JsonCodec)
        .encode(&value)
        .expect("encodes")
        .len();
    println!(
        "saved {} of {plain} bytes ({:.1}%)",
        plain - packed,
        100.0 * (plain - packed) as f64 / plain as f64
    );
}
