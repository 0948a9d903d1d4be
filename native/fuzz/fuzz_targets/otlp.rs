//! The OTLP protobuf decoders (`otlp_spans`, `otlp_logs`, `otlp_metrics`) and the OTLP/JSON one
//! (`otlp_json`, each signal) over one input read as an export request of each signal: no panic, columns valid Arrow arrays of one value per row, and
//! one `_i` / `_item` per row.
#![no_main]

use libfuzzer_sys::fuzz_target;
use obsflow_native::otlp_json::{otlp_json, Signal};
use obsflow_native::{otlp_logs, otlp_metrics, otlp_spans, OtlpOut};

fn check(out: OtlpOut, messages: usize, what: &str) {
    assert_eq!(out.verdicts.len(), messages);
    let rows = out.index.len() / 8;
    assert_eq!(out.index.len(), rows * 8);
    assert_eq!(out.items.len(), rows * 4, "{what}: _item per row");
    for (c, col) in out.cols.iter().enumerate() {
        match col.validate() {
            Ok(n) => assert_eq!(n, rows, "{what} column {c}: {n} values for {rows} rows"),
            Err(e) => panic!("{what} column {c}: not a valid Arrow array: {e}"),
        }
    }
    // the C data hand-over: exported and released, every buffer freed once
    let columns = out.cols.len();
    let batch = obsflow_native::cdata::export_batch(rows, out.cols);
    assert_eq!(batch.addresses().len(), columns);
    drop(batch);
    assert_eq!(obsflow_native::cdata::live(), (0, 0), "{what}: exported buffers left unreleased");
}

fuzz_target!(|data: &[u8]| {
    let batch = [Some(data), None, Some(data)];
    check(otlp_spans(&batch, 1 << 20), 3, "spans");
    check(otlp_logs(&batch, 1 << 20), 3, "logs");
    check(otlp_metrics(&batch, 1 << 20), 3, "metrics");
    check(otlp_json(&batch, 1 << 20, Signal::Span), 3, "json spans");
    check(otlp_json(&batch, 1 << 20, Signal::Log), 3, "json logs");
    check(otlp_json(&batch, 1 << 20, Signal::Metric), 3, "json metrics");
});
