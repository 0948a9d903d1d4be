//! The Avro decoder (`avro_batch`) over one input read as a Confluent-framed record of
//! every wire schema (its own schema id, then the header rewritten to each planned id,
//! metric v1 into v2 and a synthetic schema with booleans, ints, nested maps and a dropped
//! field included), and as a batch of its lines: it must not panic, and every column it
//! builds must be a valid Arrow array with one value per accepted record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use obsflow_native::avro::{avro_batch, Av, Plan};

fn opt(t: Av) -> Av {
    Av::Opt(Box::new(t))
}

fn syms(names: &[&str]) -> Av {
    Av::Enum(names.iter().map(|s| s.to_string()).collect())
}

/// A plan reading every column in order.
fn all(schema_id: u32, columns: &[Av]) -> Plan {
    Plan { schema_id, fields: columns.iter().cloned().enumerate().map(|(i, t)| (t, Some(i))).collect() }
}

/// The wire schemas' columns as schemas/codecs/native_avro.py hands them to the extension
/// (`avro_spec` of each field of schemas/avro/*.avsc), with their plans.
fn schemas() -> Vec<(Vec<Av>, Vec<Plan>)> {
    use Av::*;
    let s = || opt(Str);
    let interaction = Record(vec![Str, s(), opt(Double), s(), opt(Int), opt(Long), s(), s()]);
    let event = vec![Str, Long, Str, Str, s(), s(), s(), s(), s(), Array(Box::new(interaction))];
    let log = vec![Long, Str, Str, Str, s(), s(), s(), s(), s(), s(), opt(Map)];
    let span = vec![Str, Str, s(), Str, Str, syms(&["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]),
        Long, Long, syms(&["UNSET", "OK", "ERROR"]), s(), opt(Map), opt(Map)];
    let metric = vec![Str, syms(&["COUNTER", "GAUGE", "HISTOGRAM", "SUMMARY"]), Long, Map, opt(Double),
        opt(Array(Box::new(Double))), opt(Array(Box::new(Long))), opt(Long), opt(Double), opt(syms(&["CUMULATIVE", "DELTA"])), opt(Long)];
    let v1 = Plan { schema_id: 4, fields: metric[..9].iter().cloned().enumerate().map(|(i, t)| (t, Some(i))).collect() };
    let odd = vec![Bool, Int, opt(Bool), Array(Box::new(Map)), opt(Record(vec![Int, Bool]))];
    let mut odd_plan = all(9, &odd);
    odd_plan.fields.insert(2, (Record(vec![Str, Array(Box::new(Long))]), None)); // a writer field the reader lacks
    vec![
        (event.clone(), vec![all(1, &event)]),
        (log.clone(), vec![all(2, &log)]),
        (span.clone(), vec![all(3, &span)]),
        (metric.clone(), vec![all(7, &metric), v1]),
        (odd.clone(), vec![odd_plan]),
    ]
}

fn check(payloads: &[Option<&[u8]>], columns: &[Av], plans: &[Plan]) {
    let (verdicts, cols) = avro_batch(payloads, 65536, columns, plans);
    assert_eq!(verdicts.len(), payloads.len());
    let rows = verdicts.iter().filter(|&&v| v == 1).count();
    for (k, col) in cols.iter().enumerate() {
        match col.validate() {
            Ok(n) => assert_eq!(n, rows, "column {k}: {n} values for {rows} rows"),
            Err(e) => panic!("column {k}: not a valid Arrow array: {e}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let lines: Vec<Option<&[u8]>> = data.split(|&c| c == b'\n').map(Some).chain([None]).collect();
    for (columns, plans) in schemas() {
        assert!(plans.iter().all(|p| p.fits(&columns)));
        check(&[Some(data)], &columns, &plans);
        check(&lines, &columns, &plans);
        if data.len() >= 5 {
            for plan in &plans {
                let mut framed = data.to_vec();
                framed[0] = 0;
                framed[1..5].copy_from_slice(&plan.schema_id.to_be_bytes());
                check(&[Some(&framed), Some(data)], &columns, &plans);
            }
        }
    }
});
