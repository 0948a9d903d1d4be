//! The JSON decoder (`json_batch`) over one input read as a record of every wire schema,
//! and as a batch of its lines: it must not panic, and every column it builds must be a
//! valid Arrow array with one value per accepted record, exported through the Arrow C data
//! interface and released without a leak.
#![no_main]

use libfuzzer_sys::fuzz_target;
use obsflow_native::{json_batch, Ty};

fn s(name: &str, t: Ty) -> (String, Ty) {
    (name.to_string(), t)
}

/// The wire schemas as schemas/codecs/native_json.py hands them to the extension
/// (`_spec` of schemas.wire.arrow_schema for event, log, span and metric).
fn schemas() -> Vec<Vec<(String, Ty)>> {
    use Ty::*;
    let (ms, us) = (Ts(1_000_000), Ts(1_000));
    let event_item = Struct(vec![s("type", Str), s("target", Str), s("depth", F64), s("form", Str), s("step", I32),
        s("duration_ms", I64), s("message", Str), s("stackTrace", Str)]);
    vec![
        vec![s("event_id", Str), s("timestamp", ms.clone()), s("page", Str), s("session_id", Str), s("user", Str),
            s("location", Str), s("platform", Str), s("user_agent", Str), s("client_ip", Str), s("events", List(Box::new(event_item)))],
        vec![s("timestamp", ms.clone()), s("level", Str), s("service", Str), s("message", Str), s("trace_id", Str), s("span_id", Str),
            s("request_id", Str), s("user_id", Str), s("host", Str), s("env", Str), s("attributes", Map)],
        vec![s("trace_id", Str), s("span_id", Str), s("parent_span_id", Str), s("service", Str), s("name", Str), s("kind", Str),
            s("start_time", us.clone()), s("end_time", us), s("status_code", Str), s("status_message", Str), s("attributes", Map),
            s("resource", Map)],
        vec![s("name", Str), s("kind", Str), s("timestamp", ms.clone()), s("labels", Map), s("value", F64),
            s("bucket_bounds", List(Box::new(F64))), s("bucket_counts", List(Box::new(I64))), s("count", I64), s("sum", F64),
            s("temporality", Str), s("start_time", ms), s("flag", Bool)],
    ]
}

fn check(payloads: &[Option<&[u8]>], fields: &[(String, Ty)]) {
    let (verdicts, cols) = json_batch(payloads, 65536, fields);
    assert_eq!(verdicts.len(), payloads.len());
    let rows = verdicts.iter().filter(|&&v| v == 1).count();
    for (col, (name, _)) in cols.iter().zip(fields) {
        match col.validate() {
            Ok(n) => assert_eq!(n, rows, "{name}: {n} values for {rows} rows"),
            Err(e) => panic!("{name}: not a valid Arrow array: {e}"),
        }
    }
    // the C data hand-over: exported and released, every buffer freed once
    let batch = obsflow_native::cdata::export_batch(rows, cols);
    assert_eq!(batch.addresses().len(), fields.len());
    drop(batch);
    assert_eq!(obsflow_native::cdata::live(), (0, 0), "exported buffers left unreleased");
}

fuzz_target!(|data: &[u8]| {
    let lines: Vec<Option<&[u8]>> = data.split(|&c| c == b'\n').map(Some).chain([None]).collect();
    for fields in schemas() {
        check(&[Some(data)], &fields);
        check(&lines, &fields);
    }
});
