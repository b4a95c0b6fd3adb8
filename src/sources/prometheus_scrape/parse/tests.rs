use super::*;
use proptest::prelude::*;

fn text(body: &str) -> Result<Vec<OwnedSample>, ParseError> {
    parse_all(body.as_bytes(), Format::Text, Limits::default())
}

fn om(body: &str) -> Result<Vec<OwnedSample>, ParseError> {
    parse_all(body.as_bytes(), Format::OpenMetrics, Limits::default())
}

fn err(body: &str) -> (usize, ErrorKind) {
    let e = text(body).unwrap_err();
    (e.line, e.kind)
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

const GPU: &str = r#"# HELP nvidia_smi_gpu_info A metric with a constant '1' value labeled by gpu uuid, name, driver_version.
# TYPE nvidia_smi_gpu_info gauge
nvidia_smi_gpu_info{driver_version="590.48.01",index="0",name="NVIDIA H100 80GB HBM3",uuid="GPU-0"} 1
# HELP nvidia_smi_memory_used_bytes memory.used [MiB]
# TYPE nvidia_smi_memory_used_bytes gauge
nvidia_smi_memory_used_bytes{uuid="GPU-0"} 2.0780679168e+10
# HELP nvidia_smi_power_draw_watts power.draw [W]
# TYPE nvidia_smi_power_draw_watts gauge
nvidia_smi_power_draw_watts{uuid="GPU-0"} 631.95
# HELP nvidia_smi_failed_scrapes_total Number of failed collections
# TYPE nvidia_smi_failed_scrapes_total counter
nvidia_smi_failed_scrapes_total 0
"#;

#[test]
fn parses_a_gpu_exporter_exposition() {
    let samples = text(GPU).unwrap();
    assert_eq!(samples.len(), 4);
    assert_eq!(samples[0].name, "nvidia_smi_gpu_info");
    assert_eq!(
        samples[0].labels,
        labels(&[
            ("driver_version", "590.48.01"),
            ("index", "0"),
            ("name", "NVIDIA H100 80GB HBM3"),
            ("uuid", "GPU-0")
        ])
    );
    assert_eq!(samples[0].value, 1.0);
    assert_eq!(samples[1].value, 20_780_679_168.0);
    assert_eq!(samples[2].value, 631.95);
    assert_eq!(
        (samples[3].name.as_str(), samples[3].labels.len(), samples[3].value),
        ("nvidia_smi_failed_scrapes_total", 0, 0.0)
    );
    assert!(samples.iter().all(|s| s.timestamp_ms.is_none()));
}

#[test]
fn sample_refs_borrow_the_series_text() {
    let body = b"a{x=\"1\"} 1\na  {x=\"1\"}\t2 17\n";
    let mut state = ParseState::default();
    let mut p = Parser::new(body, Format::Text, Limits::default(), &mut state).unwrap();
    let first = p.next_sample().unwrap().unwrap();
    assert_eq!((first.name, first.series, first.line, first.timestamp_ms), ("a", "a{x=\"1\"}", 1, None));
    let second = p.next_sample().unwrap().unwrap();
    assert_eq!((second.series, second.value, second.timestamp_ms, second.line), ("a  {x=\"1\"}", 2.0, Some(17), 2));
    assert_eq!(p.next_sample(), Ok(None));
    assert_eq!(p.next_sample(), Ok(None));
}

#[test]
fn label_values_are_unescaped() {
    let s = text("m{a=\"x\\\"y\\\\z\\nw\",b=\"plain\",c=\"\"} 1\n").unwrap();
    assert_eq!(s[0].labels, labels(&[("a", "x\"y\\z\nw"), ("b", "plain"), ("c", "")]));
    let s = text("m{a=\"ünï \\\\ cødé\"} 1\n").unwrap();
    assert_eq!(s[0].labels, labels(&[("a", "ünï \\ cødé")]));
}

#[test]
fn blanks_trailing_commas_crlf_and_comments() {
    let s = text("  # a free comment\n\nm { a = \"1\" , b=\"2\", } 3 \r\n\tn\t4\t-5\n#HELP x y\nx{} 1").unwrap();
    assert_eq!(s.len(), 3);
    assert_eq!((s[0].labels.clone(), s[0].value), (labels(&[("a", "1"), ("b", "2")]), 3.0));
    assert_eq!((s[1].name.as_str(), s[1].value, s[1].timestamp_ms), ("n", 4.0, Some(-5)));
    assert_eq!((s[2].name.as_str(), s[2].labels.len()), ("x", 0));
}

#[test]
fn special_values() {
    let s =
        text("a NaN\nb +Inf\nc -Inf\nd -0\ne 1e-3\nf .5\ng 1.\nh 12345678901234567890123\ni 1e400\nj inf\n").unwrap();
    assert!(s[0].value.is_nan());
    assert_eq!(s[1].value, f64::INFINITY);
    assert_eq!(s[2].value, f64::NEG_INFINITY);
    assert!(s[3].value == 0.0 && s[3].value.is_sign_negative());
    assert_eq!(s[4].value, 0.001);
    assert_eq!(s[5].value, 0.5);
    assert_eq!(s[6].value, 1.0);
    assert_eq!(s[7].value, 1.2345678901234568e22);
    assert_eq!(s[8].value, f64::INFINITY);
    assert_eq!(s[9].value, f64::INFINITY);
    assert!(!crate::event::samples::is_stale_nan(s[0].value), "a scraped NaN is not a stale marker");
}

#[test]
fn a_value_ends_at_a_blank_and_anything_glued_to_it_is_refused() {
    let s = text("a 2e3\t17\nb -1.5 \nc 7\r\n").unwrap();
    assert_eq!((s[0].value, s[0].timestamp_ms), (2000.0, Some(17)));
    assert_eq!((s[1].value, s[1].timestamp_ms), (-1.5, None));
    assert_eq!((s[2].value, s[2].timestamp_ms), (7.0, None));
    assert_eq!(err("a 1.5x\n"), (1, ErrorKind::InvalidValue("1.5x".into())));
    assert_eq!(err("a 1e+\n"), (1, ErrorKind::InvalidValue("1e+".into())));
    assert_eq!(err("a 3,5\n"), (1, ErrorKind::InvalidValue("3,5".into())));
}

#[test]
fn errors_name_the_line_and_the_problem() {
    assert_eq!(err("a 1\nm{a=\"x\\qy\"} 1\n"), (2, ErrorKind::InvalidLabelEscape('q')));
    assert_eq!(err("# HELP a one\n# HELP a two\na 1\n"), (2, ErrorKind::DuplicateHelp("a".into())));
    assert_eq!(err("# TYPE a gauge\n# TYPE a counter\n"), (2, ErrorKind::DuplicateType("a".into())));
    assert_eq!(err("a 1\n# TYPE a gauge\n"), (2, ErrorKind::TypeAfterSamples("a".into())));
    assert_eq!(err("# TYPE a rainbow\n"), (1, ErrorKind::UnknownType("rainbow".into())));
    assert_eq!(err("# HELP a bad \\t escape\n"), (1, ErrorKind::InvalidHelpEscape('t')));
    assert_eq!(err("# HELP\n"), (1, ErrorKind::MissingMetricName("HELP")));
    assert_eq!(err("m{a=\"x} 1\n"), (1, ErrorKind::UnterminatedLabelValue));
    assert_eq!(err("m{a=\"x\\"), (1, ErrorKind::UnterminatedLabelValue));
    assert_eq!(err("m{1a=\"x\"} 1\n"), (1, ErrorKind::InvalidLabelName("1a".into())));
    assert_eq!(
        err("m{a \"x\"} 1\n"),
        (1, ErrorKind::Expected { expected: "`=` after a label name", found: "\"".into() })
    );
    assert_eq!(
        err("m{a=x} 1\n"),
        (1, ErrorKind::Expected { expected: "`\"` to open a label value", found: "x".into() })
    );
    assert_eq!(
        err("m{a=\"x\" b=\"y\"} 1\n"),
        (1, ErrorKind::Expected { expected: "`,` or `}` after a label", found: "b".into() })
    );
    assert_eq!(err("m{a=\"x\"}\n"), (1, ErrorKind::MissingValue));
    assert_eq!(err("m\n"), (1, ErrorKind::MissingValue));
    assert_eq!(err("m one\n"), (1, ErrorKind::InvalidValue("one".into())));
    assert_eq!(err("m 1 1.5\n"), (1, ErrorKind::InvalidTimestamp("1.5".into())));
    assert_eq!(err("m 1 2 3\n"), (1, ErrorKind::Trailing("3".into())));
    assert_eq!(err("foo-bar 1\n"), (1, ErrorKind::InvalidMetricName("foo-bar".into())));
    assert_eq!(err("1abc 1\n"), (1, ErrorKind::InvalidMetricName("1abc".into())));
    assert_eq!(
        err("m{a=\"1\"}2\n"),
        (1, ErrorKind::Expected { expected: "a blank before the value", found: "2".into() })
    );
    let e = parse_all(b"a 1\nb{x=\"\xff\"} 1\n", Format::Text, Limits::default()).unwrap_err();
    assert_eq!((e.line, e.kind), (2, ErrorKind::InvalidUtf8));
}

#[test]
fn lines_above_the_limit_are_refused() {
    let long = format!("a 1\nm{{v=\"{}\"}} 1\n", "x".repeat(100));
    let limits = Limits { max_line_size: 64 };
    let e = parse_all(long.as_bytes(), Format::Text, limits).unwrap_err();
    assert_eq!((e.line, e.kind.clone()), (2, ErrorKind::LineTooLong { len: 109, limit: 64 }));
    assert_eq!(e.to_string(), "line 2: the line is 109 bytes long, above the limit of 64");
    assert!(parse_all(long.as_bytes(), Format::Text, Limits { max_line_size: 0 }).is_ok());
}

#[test]
fn families_of_histograms_summaries_and_counters() {
    let body = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n\
                # TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 1\ns_count 1\n\
                # TYPE c_total counter\nc_total 1\n";
    assert_eq!(text(body).unwrap().len(), 8);
    // As in the Go parser, an untyped `x_sum` is its own family: a later TYPE for `x` is new.
    assert!(text("# TYPE h histogram\nh_bucket 1\nx_sum 1\n# TYPE x summary\n").is_ok());
    assert!(text("# HELP h x\nh_bucket 1\n# TYPE h histogram\n").is_ok(), "an untyped h_bucket is not h's");
    assert_eq!(err("# HELP h x\nh 1\n# TYPE h gauge\n"), (3, ErrorKind::TypeAfterSamples("h".into())));
}

#[test]
fn openmetrics() {
    let body = "# TYPE requests counter\n# UNIT requests seconds\n# HELP requests Requests \\\"served\\\".\n\
                requests_total{path=\"/\"} 10 1700000000.123 # {trace_id=\"abc\"} 1 1700000000.1\n\
                requests_created{path=\"/\"} 1699990000\n# EOF\n";
    let s = om(body).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].name.as_str(), s[0].value, s[0].timestamp_ms), ("requests_total", 10.0, Some(1_700_000_000_123)));
    assert_eq!(s[0].labels, labels(&[("path", "/")]));
    assert!(om("a 1\n# EOF").is_ok(), "the newline after EOF is optional");
    let e = om("a 1\n").unwrap_err();
    assert_eq!((e.line, e.kind), (2, ErrorKind::MissingEof));
    let e = om("a 1\n# EOF\nb 2\n").unwrap_err();
    assert_eq!((e.line, e.kind), (3, ErrorKind::ContentAfterEof));
    let e = om("# a comment\na 1\n# EOF\n").unwrap_err();
    assert_eq!((e.line, e.kind), (1, ErrorKind::InvalidComment("# a comment".into())));
    let e = om("# TYPE a untyped\n# EOF\n").unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnknownType("untyped".into()));
    assert!(om("# TYPE a unknown\n# TYPE i info\ni_info{v=\"1\"} 1\n# EOF\n").is_ok());
    let e = om("a 1 # trace\n# EOF\n").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Trailing("# trace".into()));
    // The text format has no exemplars and no UNIT.
    assert_eq!(err("a 1 # {x=\"y\"} 1\n"), (1, ErrorKind::InvalidTimestamp("#".into())));
    assert!(text("# UNIT a seconds\na 1\n").is_ok(), "a free comment in the text format");
}

#[test]
fn content_type_picks_the_format() {
    assert_eq!(
        Format::from_content_type(Some("application/openmetrics-text; version=1.0.0; charset=utf-8")),
        Format::OpenMetrics
    );
    assert_eq!(Format::from_content_type(Some("text/plain; version=0.0.4; charset=utf-8")), Format::Text);
    assert_eq!(Format::from_content_type(Some("application/json")), Format::Text);
    assert_eq!(Format::from_content_type(None), Format::Text);
}

#[test]
fn state_is_reset_between_bodies() {
    let mut state = ParseState::default();
    for _ in 0..2 {
        let mut p = Parser::new(GPU.as_bytes(), Format::Text, Limits::default(), &mut state).unwrap();
        let mut n = 0;
        while p.next_sample().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 4, "the second parse does not see the first one's HELP lines");
    }
}

/// Renders a label value the way exporters escape it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn name_strategy() -> impl Strategy<Value = String> {
    "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}"
}

fn label_name_strategy() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_]{0,12}"
}

fn value_strategy() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        (-1_000_000i64..1_000_000).prop_map(|v| v as f64),
        (0u32..100_000, 0u32..6).prop_map(|(m, e)| m as f64 / 10f64.powi(e as i32)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn renders_and_parses_back(
        series in proptest::collection::vec(
            (name_strategy(), proptest::collection::btree_map(label_name_strategy(), "[ -~\n\"\\\\é€]{0,16}", 0..5), value_strategy(), proptest::option::of(any::<i64>())),
            1..20),
        om_format in any::<bool>(),
    ) {
        let mut body = String::new();
        for (name, labels, value, ts) in &series {
            body.push_str(name);
            if !labels.is_empty() {
                body.push('{');
                for (i, (n, v)) in labels.iter().enumerate() {
                    if i > 0 { body.push(','); }
                    body.push_str(&format!("{n}=\"{}\"", escape(v)));
                }
                body.push('}');
            }
            // `{:?}` prints a float so that it parses back to the same bits (NaN aside).
            let v = if value.is_nan() { "NaN".to_string() } else if value.is_infinite() { (if *value > 0.0 { "+Inf" } else { "-Inf" }).to_string() } else { format!("{value:?}") };
            body.push(' ');
            body.push_str(&v);
            if let Some(ts) = ts {
                if om_format {
                    body.push_str(&format!(" {}", *ts / 1000));
                } else {
                    body.push_str(&format!(" {ts}"));
                }
            }
            body.push('\n');
        }
        let format = if om_format {
            body.push_str("# EOF\n");
            Format::OpenMetrics
        } else {
            Format::Text
        };
        let parsed = parse_all(body.as_bytes(), format, Limits { max_line_size: 0 }).unwrap();
        prop_assert_eq!(parsed.len(), series.len());
        for (got, (name, labels, value, ts)) in parsed.iter().zip(&series) {
            prop_assert_eq!(&got.name, name);
            let want: Vec<(String, String)> = labels.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
            prop_assert_eq!(&got.labels, &want);
            prop_assert!(got.value.to_bits() == value.to_bits() || (got.value.is_nan() && value.is_nan()), "{} vs {}", got.value, value);
            let want_ts = ts.map(|t| if om_format { (t / 1000).saturating_mul(1000) } else { t });
            if om_format && ts.is_some_and(|t| (t / 1000).unsigned_abs() > 9_007_199_254_740) {
                // Seconds that large lose precision as a float; only check that one was read.
                prop_assert!(got.timestamp_ms.is_some());
            } else {
                prop_assert_eq!(got.timestamp_ms, want_ts);
            }
        }
    }

    #[test]
    fn fast_path_agrees_with_the_standard_parser(
        int in "[+-]?[0-9]{0,20}",
        frac in proptest::option::of("[0-9]{0,20}"),
        exp in proptest::option::of("[eE][+-]?[0-9]{1,4}"),
    ) {
        let mut s = int.clone();
        if let Some(f) = &frac { s.push('.'); s.push_str(f); }
        if let Some(e) = &exp { s.push_str(e); }
        let ours = parse_value(s.as_bytes());
        let std = s.parse::<f64>().ok();
        prop_assert_eq!(ours.map(f64::to_bits), std.map(f64::to_bits), "{}", s);
    }

    #[test]
    fn word_search_finds_the_first_quote_or_backslash(bytes in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), Just(b'a'), Just(0xff_u8), Just(0x22 ^ 0x80), any::<u8>()], 0..64), from in 0usize..70) {
        let naive = bytes.get(from..).and_then(|rest| rest.iter().position(|c| *c == b'"' || *c == b'\\')).map(|p| from + p);
        prop_assert_eq!(find_quote_or_backslash(&bytes, from), naive);
    }

    #[test]
    fn never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..400), om_format in any::<bool>(), limit in 0usize..80) {
        let format = if om_format { Format::OpenMetrics } else { Format::Text };
        let _ = parse_all(&body, format, Limits { max_line_size: limit });
    }

    #[test]
    fn never_panics_on_near_expositions(body in "([a-z_:{}=\",# \\\\\n\t.0-9eE+-]|NaN|Inf|HELP|TYPE|EOF|counter|histogram|_bucket|é){0,120}", om_format in any::<bool>()) {
        let format = if om_format { Format::OpenMetrics } else { Format::Text };
        if let Ok(samples) = parse_all(body.as_bytes(), format, Limits::default()) {
            for s in samples {
                prop_assert!(is_metric_name(&s.name));
                prop_assert!(s.labels.iter().all(|(n, _)| is_label_name(n)));
            }
        }
    }
}
