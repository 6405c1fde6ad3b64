//! Event files written by ebm-log, read back by the real TensorBoard (`tensorboard` in .venv).

mod common;

use std::process::Command;

use serde_json::Value;

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("expected a number, got {v}"))
}

#[test]
fn tensorboard_reads_what_we_write() {
    let python = common::ensure_tensorboard();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run-a");
    let event_file = common::write_sample_run(&run);
    assert!(event_file.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents."));

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_events.py");
    let out = Command::new(&python).arg(&script).arg(&run).output().expect("run read_events.py");
    assert!(out.status.success(), "read_events.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).expect("JSON from read_events.py");

    // Scalars: tags, steps and values (stored as f32).
    let loss = got["scalars"]["train/loss"].as_array().unwrap();
    assert_eq!(loss.len(), 11);
    for (i, row) in loss.iter().enumerate() {
        assert_eq!(row[0].as_i64(), Some(i as i64));
        assert_eq!(f(&row[1]), f64::from((1.0 / (i as f64 + 1.0)) as f32));
    }
    let nll = got["scalars"]["eval/nll"].as_array().unwrap();
    let steps: Vec<i64> = nll.iter().map(|r| r[0].as_i64().unwrap()).collect();
    assert_eq!(steps, [0, 5, 10]);
    assert_eq!(f(&nll[2][1]), f64::from(1.0f32));
    // The hparams metric is a scalar at the final step.
    assert_eq!(got["scalars"]["hparam/nll"][0][0].as_i64(), Some(10));
    assert_eq!(f(&got["scalars"]["hparam/nll"][0][1]), 1.25);

    // Image: size, step, and the PNG decodes to the exact pixels.
    let img = &got["images"]["samples"][0];
    assert_eq!(img["step"].as_i64(), Some(3));
    assert_eq!((img["width"].as_i64(), img["height"].as_i64()), (Some(7), Some(5)));
    let png = hex_decode(img["png_hex"].as_str().unwrap());
    let decoded = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(decoded, common::test_image());

    // Histograms: hand-computed buckets, counts sum to n.
    let h = got["histograms"]["weights"].as_array().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0]["step"].as_i64(), Some(2));
    let counts: Vec<f64> = h[0]["bucket"].as_array().unwrap().iter().map(f).collect();
    assert_eq!(counts, [2.0, 1.0, 1.0, 3.0]);
    let limits: Vec<f64> = h[0]["bucket_limit"].as_array().unwrap().iter().map(f).collect();
    assert_eq!(limits, [1.0, 2.0, 3.0, 4.0]);
    assert_eq!((f(&h[0]["num"]), f(&h[0]["min"]), f(&h[0]["max"])), (7.0, 0.0, 4.0));
    assert_eq!(f(&h[0]["sum"]), 14.0);
    // Tensor [-1, 0, 0, 1, 1, 1] in 2 buckets: [-1, 0) has 1, [0, 1] has 5.
    assert_eq!(h[1]["step"].as_i64(), Some(4));
    let counts: Vec<f64> = h[1]["bucket"].as_array().unwrap().iter().map(f).collect();
    assert_eq!(counts, [1.0, 5.0]);
    assert_eq!(f(&h[1]["num"]), 6.0);

    // Text (text plugin).
    let text = &got["text"]["config"][0];
    assert_eq!(text["step"].as_i64(), Some(0));
    assert_eq!(text["text"].as_str(), Some(common::CONFIG_TEXT));

    // HParams plugin data: experiment, session start (values), session end (success).
    let hp = &got["hparams"];
    let exp = &hp[ebm_log::HPARAMS_EXPERIMENT_TAG]["experiment"];
    let names: Vec<&str> = exp["hparamInfos"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["method", "lr", "steps", "persistent"]);
    assert_eq!(exp["hparamInfos"][0]["type"], "DATA_TYPE_STRING");
    assert_eq!(exp["hparamInfos"][1]["type"], "DATA_TYPE_FLOAT64");
    assert_eq!(exp["hparamInfos"][3]["type"], "DATA_TYPE_BOOL");
    assert_eq!(exp["metricInfos"][0]["name"]["tag"], "hparam/nll");
    let start = &hp[ebm_log::HPARAMS_SESSION_START_TAG]["sessionStartInfo"]["hparams"];
    assert_eq!(start["method"], "cd");
    assert_eq!(f(&start["lr"]), 0.01);
    assert_eq!(f(&start["steps"]), 1000.0);
    assert_eq!(start["persistent"], true);
    let end = &hp[ebm_log::HPARAMS_SESSION_END_TAG]["sessionEndInfo"];
    assert_eq!(end["status"], "STATUS_SUCCESS");
    for tag in [ebm_log::HPARAMS_EXPERIMENT_TAG, ebm_log::HPARAMS_SESSION_START_TAG, ebm_log::HPARAMS_SESSION_END_TAG] {
        // version 0 is the proto3 default, so MessageToDict omits it.
        assert!(hp[tag].get("version").is_none(), "{tag}: {}", hp[tag]);
    }
}
