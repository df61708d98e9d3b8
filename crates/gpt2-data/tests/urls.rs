//! `gpt2 urls` against an independent Python implementation of the same rules
//! (tests/reference/expected_urls.py → pushshift_expected.json), on the real pushshift dumps in
//! ../shared/fixtures/pushshift. Skipped, with a message, when the fixtures are absent.

use std::path::{Path, PathBuf};

use gpt2_data::reddit::{read_parquet, run_urls, KarmaMode, UrlCounts, UrlFilter, UrlFilterConfig};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn expected() -> Value {
    let p = root().join("tests/reference/pushshift_expected.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("reference file is committed"))
        .expect("valid JSON")
}

fn fixtures() -> Option<PathBuf> {
    let dir = root().join("../shared/fixtures/pushshift");
    if dir.join("RS_v2_2005-07.xz").exists() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: ../shared/fixtures/pushshift not present; the pushshift fixture checks did not run");
        None
    }
}

fn counts_json(c: &UrlCounts) -> Value {
    serde_json::to_value(c).unwrap()
}

#[test]
fn counts_and_urls_match_the_independent_reference() {
    let Some(dir) = fixtures() else { return };
    let exp = expected();
    let mut checked = 0;
    for (case, inputs) in exp["inputs"].as_object().unwrap() {
        for (mode_name, mode) in [
            ("submission", KarmaMode::Submission),
            ("sum", KarmaMode::Sum),
        ] {
            let want = &exp["cases"][format!("{case}/{mode_name}")];
            let mut f = UrlFilter::new(UrlFilterConfig {
                mode,
                ..Default::default()
            });
            for name in inputs.as_array().unwrap() {
                f.add_file(&dir.join(name.as_str().unwrap())).unwrap();
            }
            let (rows, counts, skipped) = f.finish();
            assert!(skipped.is_empty());
            let got = counts_json(&counts);
            for (k, v) in got.as_object().unwrap() {
                assert_eq!(v, &want[k], "{case}/{mode_name}: count `{k}`");
            }
            let kept: Vec<&str> = rows.iter().map(|r| r.normalized_url.as_str()).collect();
            let want_kept: Vec<&str> = want["kept_urls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(kept, want_kept, "{case}/{mode_name}: kept URLs");
            let sample_rows = want["rows_sample"]
                .as_array()
                .unwrap()
                .iter()
                .chain(want["multi_submission_rows"].as_array().unwrap());
            for w in sample_rows {
                let r = rows
                    .iter()
                    .find(|r| r.normalized_url == w["normalized_url"].as_str().unwrap())
                    .expect("row present");
                assert_eq!(r.url, w["url"].as_str().unwrap());
                assert_eq!(
                    r.karma,
                    w["karma"].as_i64().unwrap(),
                    "{case}/{mode_name} karma of {}",
                    r.normalized_url
                );
                assert_eq!(r.num_submissions, w["num_submissions"].as_u64().unwrap());
                assert_eq!(r.first_seen, w["first_seen"].as_i64().unwrap());
                let subs: Vec<&str> = w["subreddits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                assert_eq!(r.subreddits, subs);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
}

#[test]
fn normalisation_matches_the_reference_cases() {
    let exp = expected();
    let cases = exp["unit_cases"].as_array().unwrap();
    assert!(cases.len() > 50);
    let cfg = UrlFilterConfig::default();
    for c in cases {
        let u = c["url"].as_str().unwrap();
        // The cases run through the same checks as a submission's URL.
        let got = if u.is_empty() {
            "no_url".to_string()
        } else {
            cfg.check_url(u)
                .map(|(_, n)| n)
                .unwrap_or_else(|r| r.name().to_string())
        };
        assert_eq!(got, c["expected"].as_str().unwrap(), "{u}");
    }
}

#[test]
fn each_line_lands_in_the_reference_reason() {
    let exp = expected();
    let dir = tempfile::tempdir().unwrap();
    for (i, c) in exp["line_cases"].as_array().unwrap().iter().enumerate() {
        let line = c["line"].as_str().unwrap();
        let p = dir.path().join(format!("l{i}.jsonl"));
        std::fs::write(&p, format!("{line}\n")).unwrap();
        let mut f = UrlFilter::new(UrlFilterConfig::default());
        f.add_file(&p).unwrap();
        let (_, counts, _) = f.finish();
        let j = counts_json(&counts);
        let reasons = [
            "malformed",
            "self_post",
            "over_18",
            "no_url",
            "short_url",
            "bad_url",
            "blocked_domain",
            "blocked_extension",
        ];
        let got = reasons
            .iter()
            .find(|r| j[**r] == 1)
            .copied()
            .unwrap_or(if counts.passed == 1 { "pass" } else { "none" });
        assert_eq!(counts.submissions, 1, "{line:?}");
        assert_eq!(got, c["expected"].as_str().unwrap(), "{line:?}");
    }
}

#[test]
fn parquet_output_round_trips_and_counts_are_saved() {
    let Some(fx) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("urls.parquet");
    let txt = dir.path().join("urls.txt");
    let (counts, _) = run_urls(
        &[fx.join("RS_v2_2005-06.xz"), fx.join("RS_v2_2005-07.xz")],
        &out,
        Some(&txt),
        UrlFilterConfig::default(),
    )
    .unwrap();
    let rows = read_parquet(&out).unwrap();
    assert_eq!(rows.len() as u64, counts.kept);
    assert_eq!(
        std::fs::read_to_string(&txt).unwrap().lines().count(),
        rows.len()
    );
    let saved: UrlCounts = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("urls.counts.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved, counts);
}

#[test]
fn malformed_lines_and_truncated_dumps_follow_the_policy() {
    use gpt2_data::OnError;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.jsonl");
    std::fs::write(
        &p,
        "{\"url\":\"http://example.com/a\",\"score\":5}\n{oops\n",
    )
    .unwrap();
    let mut f = UrlFilter::new(UrlFilterConfig {
        on_error: OnError::Fail,
        ..Default::default()
    });
    let e = f.add_file(&p).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl:2"), "{e}");
    // The hint names the flag a user of `gpt2 urls` can pass (it has no config file).
    assert!(e.contains("--on-error skip"), "{e}");

    // A real xz stream cut in half: skip keeps what was read and says so; fail names the file.
    let Some(fx) = fixtures() else { return };
    let whole = std::fs::read(fx.join("RS_v2_2005-07.xz")).unwrap();
    let cut = dir.path().join("cut.xz");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let mut f = UrlFilter::new(UrlFilterConfig::default());
    f.add_file(&cut).unwrap();
    let (_, counts, skipped) = f.finish();
    assert!(counts.submissions > 0 && counts.submissions < 1079);
    assert!(skipped[0].contains("cut.xz"), "{skipped:?}");
    let mut f = UrlFilter::new(UrlFilterConfig {
        on_error: OnError::Fail,
        ..Default::default()
    });
    let e = f.add_file(&cut).unwrap_err().to_string();
    assert!(e.contains("cut.xz") && e.contains("--on-error skip"), "{e}");
}

/// Several dumps read in parallel give the same Parquet bytes, counts and list as one thread:
/// the two real fixture months plus copies with shifted scores and times, so that URLs recur
/// across files with ties and earlier first-seen times in later files (the merge rules).
#[test]
fn parallel_reading_gives_identical_output() {
    let Some(fx) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = vec![fx.join("RS_v2_2005-07.xz"), fx.join("RS_v2_2005-06.xz")];
    let r = gpt2_data::io::open_reader(&fx.join("RS_v2_2005-07.xz"), None).unwrap();
    use std::io::BufRead;
    let lines: Vec<String> = r.lines().map(|l| l.unwrap()).collect();
    for (k, shift) in [(0, -86_400i64), (1, 0), (2, 3_600)] {
        let body: String = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != k)
            .map(|(i, l)| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                if let Some(t) = v["created_utc"].as_f64() {
                    v["created_utc"] = Value::from(t as i64 + shift);
                }
                // Same normalised URL, a different raw one: which file's URL is shown matters.
                if let Some(u) = v["url"].as_str() {
                    v["url"] = Value::from(format!("{u}#copy{k}"));
                }
                if let Some(s) = v["score"].as_i64() {
                    v["score"] = Value::from(s - (i as i64 % 4));
                }
                v.to_string() + "\n"
            })
            .collect();
        let p = dir.path().join(format!("shifted{k}.jsonl"));
        std::fs::write(&p, body + "{broken\n").unwrap();
        inputs.push(p);
    }
    let run = |threads: usize| {
        let out = dir.path().join(format!("urls{threads}.parquet"));
        let txt = dir.path().join(format!("urls{threads}.txt"));
        let cfg = UrlFilterConfig {
            threads,
            mode: KarmaMode::Sum,
            ..Default::default()
        };
        let (counts, skipped) = run_urls(&inputs, &out, Some(&txt), cfg).unwrap();
        (
            std::fs::read(&out).unwrap(),
            std::fs::read(&txt).unwrap(),
            counts,
            skipped,
        )
    };
    let one = run(1);
    assert!(one.2.duplicate_submissions > 1000, "{:?}", one.2);
    assert_eq!(one.3.len(), 3, "one malformed line per shifted copy");
    for threads in [2, 3, 8] {
        let many = run(threads);
        assert!(one.0 == many.0, "parquet differs at {threads} threads");
        assert!(one.1 == many.1, "url list differs at {threads} threads");
        assert_eq!(one.2, many.2);
        assert_eq!(one.3, many.3);
    }
}
