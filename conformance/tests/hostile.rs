//! The hostile-input corpus in `testdata/bad/`: every case must give its CNI error code and
//! message, exit non-zero, never panic, and change nothing (no link, rule or file).
//!
//! A case is a JSON file: `plugin`, `stdin` (or `stdin_huge`: a config padded to that many
//! bytes), `env` overrides, `unset` variables, `files` to create first, and the expected
//! `code` and `msg` (a prefix). `@DIR@` and `@NETNS@` stand for the case's temp dir and the
//! container's namespace.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;

use conformance::Node;
use serde_json::Value;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/bad");

fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn host_state(node: &Node) -> String {
    let mut s = node.host().sh("ip", &["-o", "link", "show"]);
    s.push_str(&node.host().sh("nft", &["list", "ruleset"]));
    s
}

#[test]
fn every_hostile_input_is_refused_cleanly() {
    let mut files: Vec<_> = fs::read_dir(CORPUS)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 60,
        "the corpus has only {} cases",
        files.len()
    );
    let node = Node::new();
    let (id, ns) = node.container();
    let before_host = host_state(&node);
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let case: Value = serde_json::from_str(&fs::read_to_string(file).unwrap()).unwrap();
        let dir = node.dir().join(&name);
        fs::create_dir_all(&dir).unwrap();
        let subst = |s: &str| {
            s.replace("@DIR@", &dir.display().to_string())
                .replace("@NETNS@", &ns.path_str())
        };
        for (f, content) in case["files"].as_object().into_iter().flatten() {
            fs::write(dir.join(f), content.as_str().unwrap()).unwrap();
        }
        let before_files = listing(&dir);
        let stdin = match case["stdin_huge"].as_u64() {
            Some(n) => format!(
                r#"{{"cniVersion":"1.0.0","name":"net","pad":"{}"}}"#,
                "x".repeat(usize::try_from(n).unwrap())
            ),
            None => subst(case["stdin"].as_str().unwrap()),
        };
        let mut call = node
            .plugin(case["plugin"].as_str().unwrap())
            .command("ADD")
            .container(&id, &ns.path_str())
            .stdin(stdin);
        for (k, v) in case["env"].as_object().into_iter().flatten() {
            call = call.env(k, v.as_str().unwrap());
        }
        for k in case["unset"].as_array().into_iter().flatten() {
            call = call.unset(k.as_str().unwrap());
        }
        let out = call.run();
        let want_code = case["code"].as_u64().unwrap();
        let want_msg = subst(case["msg"].as_str().unwrap());
        let got: Option<Value> = serde_json::from_str(&out.stdout).ok();
        let got_code = got.as_ref().and_then(|v| v["code"].as_u64());
        let got_msg = got
            .as_ref()
            .and_then(|v| v["msg"].as_str())
            .unwrap_or_default()
            .to_owned();
        let mut problems = Vec::new();
        if out.exit_code == 0 {
            problems.push("exit 0".to_owned());
        }
        if got_code != Some(want_code) {
            problems.push(format!("code {got_code:?}, want {want_code}"));
        }
        if !got_msg.starts_with(&want_msg) {
            problems.push(format!("msg {got_msg:?}, want prefix {want_msg:?}"));
        }
        if out.stderr.contains("panicked") || out.exit_code > 1 {
            problems.push(format!("crashed: {}", out.stderr));
        }
        if listing(&dir) != before_files {
            problems.push(format!("files changed: {:?}", listing(&dir)));
        }
        if host_state(&node) != before_host {
            problems.push("host links or rules changed".to_owned());
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {}", problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
