//! The rendered tables are accepted by the real `nft` (in a test-made namespace) for every
//! policy case of the engine's data-driven tests; going from any case's table to the next by
//! diff leaves the kernel exactly as installing it from scratch would; a fresh programmer
//! reading the kernel finds nothing to do, and repairs whatever was changed behind its back.
//! System tests: root and nftables.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use gingham_dataplane::{Backend, Nft, Programmer, Table, canonical, render};
use gingham_testkit::netns::TestNetns;

fn nft_in(ns: &TestNetns, script: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn case_tables() -> Vec<(PathBuf, Table)> {
    common::case_programs()
        .into_iter()
        .map(|(dir, program, settings)| (dir, render(&program, &settings).table))
        .collect()
}

fn installed(ns: &TestNetns) -> String {
    let json = Nft::in_netns(ns.name())
        .read()
        .unwrap()
        .expect("table installed");
    canonical(&json).expect("listing readable")
}

#[test]
fn sys_every_case_renders_to_a_table_nft_accepts() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    let ns = TestNetns::new("nft");
    for (dir, table) in case_tables() {
        let script = table.replace_script().text;
        for _ in 0..2 {
            let out = nft_in(&ns, &script);
            assert!(
                out.status.success(),
                "{}: {}\n{}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr),
                script
            );
        }
        let listed = ns.exec_ok(&["nft", "list", "table", "inet", "gingham"]);
        assert!(listed.contains("chain forward"), "{listed}");
    }
}

#[test]
fn sys_diffs_leave_the_kernel_as_a_fresh_install_would() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    let tables = case_tables();
    let inc = TestNetns::new("nftinc");
    let fresh = TestNetns::new("nftfresh");
    let mut programmer = Programmer::new(Nft::in_netns(inc.name()));
    // Forward through every case, then back, then the first again: every step is a diff.
    let order: Vec<usize> = (0..tables.len())
        .chain((0..tables.len()).rev())
        .chain([0])
        .collect();
    let mut diffs = 0;
    for (step, &i) in order.iter().enumerate() {
        let (dir, table) = &tables[i];
        let applied = programmer.sync(table.clone()).unwrap_or_else(|e| {
            panic!("step {step} to {}: {e}", dir.display());
        });
        assert!(!applied.replaced, "step {step}: {applied:?}");
        assert_eq!(applied.read_kernel, step == 0);
        if step > 0 {
            diffs += 1;
        }
        let out = nft_in(&fresh, &table.replace_script().text);
        assert!(out.status.success());
        assert_eq!(
            installed(&inc),
            installed(&fresh),
            "step {step} to {}: the diffed table differs from a fresh install",
            dir.display()
        );
        // A fresh programmer (an agent restarting) finds nothing to do.
        let mut restarted = Programmer::new(Nft::in_netns(inc.name()));
        let again = restarted.sync(table.clone()).unwrap();
        assert_eq!(again.commands, 0, "step {step}: {again:?}");
    }
    assert!(diffs >= 20);
}

#[test]
fn sys_the_consistency_check_repairs_changes_made_behind_its_back() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    let tables = case_tables();
    // The largest table: most chains and sets to tamper with.
    let (_, table) = tables
        .iter()
        .max_by_key(|(_, t)| t.chains.len() + t.sets.len())
        .unwrap();
    let ns = TestNetns::new("nftfix");
    let mut programmer = Programmer::new(Nft::in_netns(ns.name()));
    programmer.sync(table.clone()).unwrap();
    let good = installed(&ns);
    // Nothing changed: the check reads the kernel and sends nothing.
    let checked = programmer.check(table.clone()).unwrap();
    assert!(checked.read_kernel);
    assert_eq!(checked.commands, 0);

    let set = table
        .sets
        .iter()
        .find(|(_, s)| !s.elements.is_empty())
        .expect("a set with members");
    let chain = table
        .chains
        .iter()
        .find(|(n, c)| n.starts_with('p') && !c.rules.is_empty())
        .expect("a policy chain");
    let tamper = format!(
        "flush {kind} inet gingham {set}\nflush chain inet gingham {chain}\nadd chain inet gingham intruder\nadd rule inet gingham forward accept\n",
        set = set.0,
        kind = if set.0.starts_with("wl-") {
            "map"
        } else {
            "set"
        },
        chain = chain.0
    );
    let out = nft_in(&ns, &tamper);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(installed(&ns), good);
    let repaired = programmer.check(table.clone()).unwrap();
    assert!(!repaired.replaced, "{repaired:?}");
    assert!(repaired.commands >= 4, "{repaired:?}");
    assert_eq!(installed(&ns), good);

    // A base chain with another hook cannot be edited: the table is replaced, atomically.
    let out = nft_in(
        &ns,
        "delete chain inet gingham input\nadd chain inet gingham input { type filter hook input priority 0; policy accept; }\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replaced = programmer.check(table.clone()).unwrap();
    assert!(replaced.replaced, "{replaced:?}");
    assert_eq!(installed(&ns), good);
}

/// Every flow log rule of every case's table carries a tag that names its cause in
/// `explain`'s words (none is left unresolved), and every drop that policy decides has one.
#[test]
fn every_flow_log_tag_names_its_cause() {
    let mut tags = 0;
    for (dir, program, settings) in common::case_programs() {
        let table = render(&program, &settings).table;
        for (name, chain) in &table.chains {
            let rules = &chain.rules;
            for (i, r) in rules.iter().enumerate() {
                let Some((_, rest)) = r.text.split_once(" prefix \"") else {
                    if r.text.ends_with("counter drop") && !r.text.contains("ip protocol 4") {
                        let logged = i > 0 && rules[i - 1].text.contains(" log group ");
                        let tunnel = r.text.contains("udp dport") || name == "forward";
                        assert!(
                            logged || tunnel,
                            "{}: chain {name}: a drop without a flow log: {}",
                            dir.display(),
                            r.text
                        );
                    }
                    continue;
                };
                let tag = rest.trim_end_matches('"');
                if !tag.starts_with("gh ") {
                    continue;
                }
                tags += 1;
                let cause =
                    gingham_dataplane::render::flow_cause(&program, tag, Default::default())
                        .unwrap_or_else(|| panic!("{}: tag {tag:?} names nothing", dir.display()));
                assert!(!cause.cause.is_empty());
                assert!(
                    r.text.contains(&format!(
                        " log group {} ",
                        gingham_dataplane::render::FLOW_LOG_GROUP
                    )) && r.text.contains("limit rate"),
                    "{}",
                    r.text
                );
            }
        }
    }
    assert!(tags > 20, "only {tags} flow log rules");
}

/// With `flowLogsAllowed`, every Allow rule of a policy or profile is preceded by a flow log
/// rule whose tag names it as allowed in `explain`'s words; without it, nothing allowed is
/// logged. Turning it on in a running renderer gives the table rendered with it from scratch.
#[test]
fn allowed_flows_are_logged_only_when_turned_on() {
    // What an Allow rule does: in a policy or profile chain it marks the packet and returns to
    // the endpoint's chain; inlined in a workload's stage chain it is the stage's verdict
    // (accept at ingress, return at egress).
    const ALLOWS: [&str; 3] = [
        "counter meta mark set meta mark | 0x00010000 return",
        "counter accept",
        "counter return",
    ];
    let mut allows = 0;
    for (dir, program, settings) in common::case_programs() {
        let off = render(&program, &settings).table;
        let on_settings = render::Settings {
            flow_logs_allowed: true,
            ..settings.clone()
        };
        let on = render(&program, &on_settings).table;
        let tag_of = |text: &str| {
            text.split_once(" prefix \"")
                .map(|(_, t)| t.trim_end_matches('"').to_owned())
        };
        for (name, chain) in &off.chains {
            for r in &chain.rules {
                let tag = tag_of(&r.text).unwrap_or_default();
                assert!(
                    !tag.ends_with(" allow"),
                    "{}: {name}: an allowed flow is logged while off: {}",
                    dir.display(),
                    r.text
                );
            }
        }
        for (name, chain) in &on.chains {
            for (i, r) in chain.rules.iter().enumerate() {
                let policy_rule = r.note.rsplit_once(" rule ").is_some();
                let Some(matches) = ALLOWS
                    .iter()
                    .find_map(|a| r.text.strip_suffix(a))
                    .filter(|_| policy_rule)
                else {
                    continue;
                };
                allows += 1;
                let log = i.checked_sub(1).map(|j| &chain.rules[j]);
                let tag = log
                    .filter(|l| l.text.starts_with(matches) && l.text.contains(" log group "))
                    .and_then(|l| tag_of(&l.text))
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: {name}: an Allow rule without its log: {}",
                            dir.display(),
                            r.text
                        )
                    });
                let cause = render::flow_cause(&program, &tag, Default::default())
                    .unwrap_or_else(|| panic!("{}: tag {tag:?} names nothing", dir.display()));
                assert!(cause.allowed, "{tag}: {cause:?}");
                assert!(cause.cause.contains("(Allow) matched"), "{tag}: {cause:?}");
                assert!(cause.rule.is_some(), "{tag}: {cause:?}");
            }
        }
        // No workload's stage is a bare verdict in a dispatch map: the profile that allows
        // everything is met in its chain, whose Allow rule logs.
        for map in ["wl-ingress", "wl-egress"] {
            let bare: Vec<&String> = on.sets[map]
                .elements
                .iter()
                .filter(|e| e.ends_with(": accept") || e.ends_with(": continue"))
                .collect();
            assert!(bare.is_empty(), "{}: {map}: {bare:?}", dir.display());
        }
        // Switched on in a running renderer: the same table as rendered with it.
        let mut renderer = render::Renderer::new(program.clone(), settings.clone());
        renderer.set_settings(on_settings);
        assert_eq!(renderer.table(), &on, "{}", dir.display());
        assert!(renderer.take_touched().all);
    }
    assert!(allows > 20, "only {allows} Allow rules in the cases");
}
