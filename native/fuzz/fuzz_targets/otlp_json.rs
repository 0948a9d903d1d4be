//! The OTLP/JSON decoder (`otlp_json`, each signal) against the earlier transcoding reader
//! (`otlp_json_via_proto`: each message rewritten as protobuf and read by the protobuf
//! decoders), its oracle: no panic, the same verdicts, `_i`, `_item` and column buffers for
//! every input, and columns that are valid Arrow arrays of one value per row.
#![no_main]

use libfuzzer_sys::fuzz_target;
use obsflow_native::otlp_json::{otlp_json, Signal};
use obsflow_native::otlp_json_proto::{otlp_json_via_proto, same_out};

fuzz_target!(|data: &[u8]| {
    let batch = [Some(data), None, Some(b"{}".as_slice()), Some(data)];
    for signal in [Signal::Span, Signal::Log, Signal::Metric] {
        let (direct, oracle) = (otlp_json(&batch, 1 << 20, signal), otlp_json_via_proto(&batch, 1 << 20, signal));
        assert!(same_out(&direct, &oracle), "{signal:?}: the direct reader differs from the transcoding one");
        let rows = direct.index.len() / 8;
        assert_eq!(direct.items.len(), rows * 4, "{signal:?}: _item per row");
        for (c, col) in direct.cols.iter().enumerate() {
            match col.validate() {
                Ok(n) => assert_eq!(n, rows, "{signal:?} column {c}: {n} values for {rows} rows"),
                Err(e) => panic!("{signal:?} column {c}: not a valid Arrow array: {e}"),
            }
        }
    }
});
