//! `loyalty verify` and `loyalty checkpoint` on a real RocksDB state: a sound state passes,
//! and each kind of deliberate corruption is found and named.

use std::path::Path;
use std::process::{Command, Output};

use loyalty_store::Store;
use loyalty_stream::folder::Folder;
use loyalty_stream::logrec::{Meta, Source};
use loyalty_stream::Settings;

use crate::support::{bin, TempDir};

const PROGRAM: &str = r#"{"id":"prog_v","currency":"EUR","autoEnroll":true,
  "pointsExpiry":{"months":12},
  "earningRules":[{"id":"rule_buy","trigger":"payment.completed",
    "award":{"type":"per_amount","per":100,"points":1}}],
  "rewards":[{"id":"rwd_mug","name":"Mug","cost":50,"kind":"product","stock":5}]}"#;

fn records() -> Vec<String> {
    let mut r = vec![format!(
        r#"{{"id":"cfg_1","type":"loyalty.program.updated","created":"2026-01-01T00:00:00Z","data":{}}}"#,
        PROGRAM.replace('\n', "")
    )];
    for i in 0..20 {
        let c = i % 4;
        r.push(format!(
            r#"{{"id":"evt_{i}","type":"payment.completed","created":"2026-02-01T10:{i:02}:00Z","data":{{"id":"pay_{i}","customer":"cus_{c}","amount":{},"currency":"EUR"}}}}"#,
            5_000 + i * 100
        ));
    }
    r.push(r#"{"id":"ref_1","type":"payment.refunded","created":"2026-02-02T10:00:00Z","data":{"id":"re_1","payment":"pay_3","customer":"cus_3","amount":2000,"currency":"EUR"}}"#.into());
    r.push(r#"{"id":"red_1","type":"loyalty.redemption.create","created":"2026-02-03T10:00:00Z","data":{"customer":"cus_1","program":"prog_v","reward":"rwd_mug"}}"#.into());
    r.push(r#"{"id":"evt_1","type":"payment.completed","created":"2026-02-04T10:00:00Z","data":{"id":"pay_x","customer":"cus_1","amount":100,"currency":"EUR"}}"#.into());
    r
}

/// A state folded the way `loyalty run` folds it, in batches.
fn build(dir: &Path) {
    let store = Store::open(dir).unwrap();
    let mut settings = Settings::new("unused:9092");
    settings.signing_secret = b"s".to_vec();
    let mut f = Folder::open(&store, true).unwrap();
    for (i, r) in records().iter().enumerate() {
        let meta = Meta {
            source: Some(Source {
                topic: "payment.completed".into(),
                partition: 0,
                offset: i as i64,
            }),
            broadcast: false,
            content_type: None,
        };
        f.fold(&store, &settings, 0, i as i64, &meta, r.as_bytes())
            .unwrap();
        if i % 7 == 6 {
            f.commit(&store).unwrap();
        }
    }
    f.commit(&store).unwrap();
}

fn verify(dir: &Path) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let out: Output = Command::new(bin())
        .args(["verify", "--state"])
        .arg(dir)
        .output()
        .unwrap();
    let problems = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each problem is a JSON line"))
        .collect();
    (
        out.status.code(),
        problems,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn checks(problems: &[serde_json::Value]) -> Vec<String> {
    let mut c: Vec<String> = problems
        .iter()
        .map(|p| p["check"].as_str().unwrap().to_string())
        .collect();
    c.sort();
    c.dedup();
    c
}

/// A scratch directory (removed when dropped) holding a state built by [`build`].
fn built(name: &str) -> (TempDir, std::path::PathBuf) {
    let t = TempDir::new(name);
    let dir = t.0.join("state");
    build(&dir);
    (t, dir)
}

/// Rewrites the JSON value stored under `key` (an account as the JSON of its fields, stored
/// back in the store's own form).
fn edit_json(db: &rocksdb::DB, key: &[u8], f: impl FnOnce(&mut serde_json::Value)) {
    let stored = db.get(key).unwrap().unwrap();
    if key.starts_with(b"a/") {
        let a = loyalty_store::decode_account(key, &stored).unwrap();
        let mut v = serde_json::to_value(&a).unwrap();
        f(&mut v);
        let mut changed: loyalty_core::state::Account = serde_json::from_value(v).unwrap();
        changed.ledger_hash = a.ledger_hash;
        db.put(key, loyalty_store::encode_account(&changed).unwrap())
            .unwrap();
        return;
    }
    let mut v: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    f(&mut v);
    db.put(key, serde_json::to_vec(&v).unwrap()).unwrap();
}

/// Whether a stored account has open lots.
fn has_lots(key: &[u8], v: &[u8]) -> bool {
    !loyalty_store::decode_account(key, v)
        .unwrap()
        .lots
        .is_empty()
}

/// Opens the state with RocksDB itself, as something other than the engine would.
fn tamper(dir: &Path, f: impl FnOnce(&rocksdb::DB)) {
    let db = rocksdb::DB::open_default(dir).unwrap();
    f(&db);
}

fn first_key(db: &rocksdb::DB, prefix: &str, matching: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    db.prefix_iterator(prefix.as_bytes())
        .map(Result::unwrap)
        .find(|(k, v)| k.starts_with(prefix.as_bytes()) && matching(v))
        .map(|(k, _)| k.to_vec())
        .unwrap_or_else(|| panic!("no key under {prefix}"))
}

#[test]
fn a_sound_state_passes() {
    let (_t, dir) = built("verify-sound");
    let (code, problems, err) = verify(&dir);
    assert_eq!(problems, Vec::<serde_json::Value>::new(), "{err}");
    assert_eq!(code, Some(0), "{err}");
}

/// A state an earlier version wrote (no `m/format`) or of another format is refused by
/// every command that opens it, with a message that says to rebuild it with `loyalty
/// replay`, and is left as it was; an account in a form this version does not write is
/// corrupt, not read.
#[test]
fn a_state_of_another_format_is_refused_and_left_as_it_was() {
    let (_t, dir) = built("verify-format");
    assert!(verify(&dir).1.is_empty());
    tamper(&dir, |db| {
        assert_eq!(
            db.get(b"m/format").unwrap().as_deref(),
            Some(loyalty_store::STATE_FORMAT.as_bytes()),
            "a new state is marked with its format"
        );
        db.delete(b"m/format").unwrap();
    });
    let keys = |dir: &Path| {
        let mut n = 0;
        tamper(dir, |db| {
            n = db.iterator(rocksdb::IteratorMode::Start).count();
        });
        n
    };
    let before = keys(&dir);
    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    for (found, words) in [
        (None, "by an earlier version of loyalty"),
        (Some("loyalty-state/9"), "in the format \"loyalty-state/9\""),
    ] {
        if let Some(f) = found {
            tamper(&dir, |db| db.put(b"m/format", f).unwrap());
        }
        // Refused before RocksDB opens it for writing: not a file changes.
        let untouched = files();
        match Store::open(&dir).map(|_| ()) {
            Err(loyalty_store::StoreError::Format { found: got }) => {
                assert_eq!(got.as_deref(), found)
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Store::open_read_only(&dir).map(|_| ()),
            Err(loyalty_store::StoreError::Format { .. })
        ));
        for cmd in ["verify", "export"] {
            let out = Command::new(bin())
                .args([cmd, "--state"])
                .arg(&dir)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
            assert!(out.stdout.is_empty(), "{cmd}");
            assert!(
                err.contains(words) && err.contains("loyalty replay"),
                "{cmd}: {err}"
            );
        }
        assert_eq!(files(), untouched);
        assert_eq!(keys(&dir), before + usize::from(found.is_some()));
    }
    // Marked again: read as before, but an account in an earlier version's form (JSON) is
    // corrupt, named by its key.
    tamper(&dir, |db| {
        db.put(b"m/format", loyalty_store::STATE_FORMAT).unwrap();
        let (k, v) = db
            .prefix_iterator(b"a/")
            .map(Result::unwrap)
            .next()
            .unwrap();
        let a = loyalty_store::decode_account(&k, &v).unwrap();
        db.put(&k, serde_json::to_vec(&a).unwrap()).unwrap();
    });
    let (code, problems, err) = verify(&dir);
    assert_eq!(code, Some(1), "{err}");
    // (What the account's ledger, payments and indexes are checked against is then
    // missing too, and reported as well.)
    let undecoded: Vec<&str> = problems
        .iter()
        .filter(|p| p["check"] == "decode")
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(undecoded.len(), 1, "{problems:?}");
    assert!(undecoded[0].starts_with("a/"), "{problems:?}");
    let out = Command::new(bin())
        .args(["export", "--state"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupt state at key a/"));
}

#[test]
fn a_balance_changed_behind_the_ledger_is_found() {
    let (_t, dir) = built("verify-balance");
    tamper(&dir, |db| {
        let k = first_key(db, "a/", |_| true);
        edit_json(db, &k, |a| {
            a["balance"] = (a["balance"].as_i64().unwrap() + 100).into()
        });
    });
    let (code, problems, _) = verify(&dir);
    assert_eq!(code, Some(1));
    assert_eq!(checks(&problems), vec!["ledger", "lots"]);
    assert!(problems
        .iter()
        .all(|p| p["key"].as_str().unwrap().starts_with("a/loy_")));
}

#[test]
fn a_lost_ledger_line_is_found() {
    let (_t, dir) = built("verify-ledger");
    tamper(&dir, |db| {
        let k = first_key(db, "o/", |v| v.starts_with(br#"{"kind":"transaction""#));
        db.delete(&k).unwrap();
    });
    let (code, problems, _) = verify(&dir);
    assert_eq!(code, Some(1));
    let c = checks(&problems);
    assert!(c.contains(&"ledger".to_string()), "{problems:?}");
    assert!(c.contains(&"balance_after".to_string()), "{problems:?}");
}

#[test]
fn undecodable_values_negative_lots_stock_and_sequence_are_found() {
    let (_t, dir) = built("verify-decode");
    tamper(&dir, |db| {
        let k = first_key(db, "p/", |_| true);
        db.put(&k, b"{not json").unwrap();
        let k = first_key(db, "a/", |v| has_lots(b"a/", v));
        edit_json(db, &k, |a| a["lots"][0]["remaining"] = (-5).into());
        db.put(b"m/stock", br#"[[["prog_v","rwd_mug"],9]]"#)
            .unwrap();
        db.put(b"m/seq", 1u64.to_be_bytes()).unwrap();
        db.put(b"m/log/0", b"bad").unwrap();
    });
    let (code, problems, _) = verify(&dir);
    assert_eq!(code, Some(1));
    let c = checks(&problems);
    for want in [
        "decode",
        "lot_negative",
        "lots",
        "stock",
        "sequence",
        "offsets",
    ] {
        assert!(c.contains(&want.to_string()), "{want} not in {problems:?}");
    }
}

#[test]
fn a_lost_due_index_entry_and_a_misplaced_code_are_found() {
    let (_t, dir) = built("verify-index");
    tamper(&dir, |db| {
        // Every account here has lots expiring in a year: an index entry each.
        let k = first_key(db, "d/", |_| true);
        db.delete(&k).unwrap();
        let k = first_key(db, "r/", |_| true);
        db.put(&k, b"loy_000000000000000000000000").unwrap();
    });
    let (code, problems, _) = verify(&dir);
    assert_eq!(code, Some(1));
    let index: Vec<&str> = problems
        .iter()
        .filter(|p| p["check"] == "index")
        .map(|p| p["detail"].as_str().unwrap())
        .collect();
    assert!(
        index
            .iter()
            .any(|d| d.contains("the due index does not find")),
        "{problems:?}"
    );
    assert!(
        index.iter().any(|d| d.contains("in the code index, but")),
        "{problems:?}"
    );
    // A code whose holder is gone from the index.
    let (_t, dir) = built("verify-index-code");
    tamper(&dir, |db| {
        let k = first_key(db, "r/", |_| true);
        db.delete(&k).unwrap();
    });
    let (code, problems, _) = verify(&dir);
    assert_eq!(code, Some(1));
    assert_eq!(checks(&problems), vec!["index"], "{problems:?}");
}

#[test]
fn a_checkpoint_is_a_sound_copy() {
    let (t, dir) = built("verify-checkpoint");
    let copy = t.0.join("copy");
    let out = Command::new(bin())
        .args(["checkpoint", "--state"])
        .arg(&dir)
        .arg("--to")
        .arg(&copy)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let export = |d: &Path| {
        Command::new(bin())
            .args(["export", "--state"])
            .arg(d)
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(export(&dir), export(&copy));
    assert!(!export(&copy).is_empty());
    assert_eq!(verify(&copy).0, Some(0));
    // Never over an existing directory.
    let again = Command::new(bin())
        .args(["checkpoint", "--state"])
        .arg(&dir)
        .arg("--to")
        .arg(&copy)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
}

/// The folder keeps only a working set in memory (seen ids and payments are read back from
/// RocksDB when a record needs them): committing after every record, a duplicate id, a
/// refund and a second payment with the same `data.id` from earlier batches fold exactly as
/// with the whole state in memory.
#[test]
fn a_working_set_folds_like_the_whole_state() {
    let mut records = records();
    records.push(r#"{"id":"evt_2","type":"payment.completed","created":"2026-02-05T10:00:00Z","data":{"id":"pay_y","customer":"cus_2","amount":9900,"currency":"EUR"}}"#.into());
    records.push(r#"{"id":"ref_2","type":"payment.refunded","created":"2026-02-05T11:00:00Z","data":{"id":"re_2","payment":"pay_5","customer":"cus_1","amount":1000,"currency":"EUR"}}"#.into());
    records.push(r#"{"id":"evt_again","type":"payment.completed","created":"2026-02-05T12:00:00Z","data":{"id":"pay_6","customer":"cus_2","amount":700,"currency":"EUR"}}"#.into());
    records.push(r#"{"id":"ref_3","type":"payment.refunded","created":"2026-02-05T13:00:00Z","data":{"id":"re_3","payment":"pay_6","customer":"cus_2","amount":6300,"currency":"EUR"}}"#.into());
    records.push(r#"{"id":"ref_4","type":"payment.refunded","created":"2026-02-05T14:00:00Z","data":{"id":"re_4","payment":"pay_6","customer":"cus_2","amount":1000,"currency":"EUR"}}"#.into());
    let t = TempDir::new("verify-working-set");
    let dir = t.0.join("state");
    let store = Store::open(&dir).unwrap();
    let mut settings = Settings::new("unused:9092");
    settings.signing_secret = b"s".to_vec();
    let mut f = Folder::open(&store, false).unwrap();
    for (i, r) in records.iter().enumerate() {
        let meta = Meta::default();
        f.fold(&store, &settings, 0, i as i64, &meta, r.as_bytes())
            .unwrap();
        f.commit(&store).unwrap();
        // Nothing but the working set stays in memory between batches.
        assert!(f.ws.engine.state().seen.is_empty());
        assert!(f.ws.engine.state().payments.is_empty());
    }
    drop(f);
    drop(store);
    let mut whole = loyalty_core::Engine::empty();
    let straight =
        loyalty_core::fold::fold_to_string(&mut whole, records.join("\n").as_bytes(), None)
            .unwrap();
    let export = Command::new(bin())
        .args(["export", "--state"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(export.stdout).unwrap(), straight);
    // The case is not empty: a duplicate and an over-refund were refused on the way.
    assert!(straight.contains(r#""reason":"duplicate""#), "{straight}");
    assert!(straight.contains(r#""reason":"invalid""#), "{straight}");
    assert_eq!(verify(&dir).0, Some(0));
}

/// A state spread over several table files: every few commits flushed to a table (RocksDB
/// compacts the first ones together; the last stay apart).
fn built_in_tables(name: &str) -> (TempDir, std::path::PathBuf) {
    let t = TempDir::new(name);
    let dir = t.0.join("state");
    {
        let store = Store::open(&dir).unwrap();
        let mut settings = Settings::new("unused:9092");
        settings.signing_secret = b"s".to_vec();
        let mut f = Folder::open(&store, true).unwrap();
        for (i, r) in records().iter().enumerate() {
            let meta = Meta {
                source: Some(Source {
                    topic: "payment.completed".into(),
                    partition: 0,
                    offset: i as i64,
                }),
                broadcast: false,
                content_type: None,
            };
            f.fold(&store, &settings, 0, i as i64, &meta, r.as_bytes())
                .unwrap();
            if i % 5 == 4 {
                f.commit(&store).unwrap();
                store.flush().unwrap();
            }
        }
        f.commit(&store).unwrap();
        store.flush().unwrap();
    }
    (t, dir)
}

/// The table files of a state, by name.
fn tables(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut t: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sst"))
        .collect();
    t.sort();
    t
}

/// Flips one byte at `from_end` bytes before the end of `file`.
fn flip(file: &Path, from_end: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    let i = bytes.len() - from_end;
    bytes[i] ^= 0x5a;
    std::fs::write(file, bytes).unwrap();
}

/// One table file of the state that cannot be opened (a byte flipped in its footer): every
/// command that reads the state stops with a non-zero exit and names the file, instead of
/// printing or copying what the other files hold.
#[test]
fn a_table_that_cannot_be_opened_stops_every_reader() {
    let (t, dir) = built_in_tables("unopenable-table");
    let files = tables(&dir);
    assert!(files.len() >= 2, "several tables: {files:?}");
    // The first table (the compacted one): the lines and accounts of the first commits.
    let bad = &files[0];
    flip(bad, 8); // in the footer's magic number
    let name = bad.file_name().unwrap().to_string_lossy().into_owned();
    let run = |args: &[&std::ffi::OsStr]| Command::new(bin()).args(args).output().unwrap();
    let s = dir.as_os_str();
    for (what, out) in [
        ("export", run(&["export".as_ref(), "--state".as_ref(), s])),
        ("verify", run(&["verify".as_ref(), "--state".as_ref(), s])),
        (
            "checkpoint",
            run(&[
                "checkpoint".as_ref(),
                "--state".as_ref(),
                s,
                "--to".as_ref(),
                t.0.join("copy").as_os_str(),
            ]),
        ),
    ] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.contains(&name), "{what} names {name}: {stderr}");
    }
    assert!(!t.0.join("copy").exists(), "no checkpoint is left behind");
}

/// A byte flipped inside a data block of a table: the same.
#[test]
fn a_corrupt_data_block_stops_every_reader() {
    let (t, dir) = built_in_tables("corrupt-block");
    let files = tables(&dir);
    let bad = &files[1];
    // Early in the file: the first data block.
    let mut bytes = std::fs::read(bad).unwrap();
    bytes[20] ^= 0x5a;
    std::fs::write(bad, bytes).unwrap();
    let name = bad.file_name().unwrap().to_string_lossy().into_owned();
    let s = dir.as_os_str();
    for args in [
        vec!["export".as_ref(), "--state".as_ref(), s],
        vec!["verify".as_ref(), "--state".as_ref(), s],
        vec![
            "checkpoint".as_ref(),
            "--state".as_ref(),
            s,
            "--to".as_ref(),
            t.0.join("copy").as_os_str(),
        ],
    ] {
        let out = Command::new(bin()).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&name), "{args:?} names {name}: {stderr}");
    }
}

/// The HTTP API's indexes are part of the state: an entry lost, left over or pointing
/// elsewhere is reported under `api_index`.
#[test]
fn the_api_indexes_are_checked() {
    let (_t, dir) = built("verify-api-index");
    tamper(&dir, |db| {
        let k = first_key(db, "l/", |_| true);
        db.delete(&k).unwrap();
        db.put(b"c/cus_ghost\0loy_ghost", b"").unwrap();
        let k = first_key(db, "i/", |_| true);
        db.put(&k, 999_999u64.to_be_bytes()).unwrap();
    });
    let (code, problems, _) = verify(&dir);
    assert_eq!(code, Some(1));
    let index: Vec<&serde_json::Value> = problems
        .iter()
        .filter(|p| p["check"] == "api_index")
        .collect();
    assert_eq!(index.len(), 3, "{problems:?}");
    let details: Vec<&str> = index.iter().filter_map(|p| p["detail"].as_str()).collect();
    assert!(details.contains(&"missing from the index"), "{details:?}");
    assert!(details.contains(&"holds another value"), "{details:?}");
    assert!(
        details.contains(&"an index entry that nothing in the state calls for"),
        "{details:?}"
    );
}

/// The program statistics are recounted from the ledger: a day's count or the totals
/// changed behind it, or a day the ledger does not have, are found.
#[test]
fn statistics_changed_behind_the_ledger_are_found() {
    for (name, change) in [("day", "d"), ("totals", "m"), ("extra", "x")] {
        let (_t, dir) = built(&format!("verify-stats-{name}"));
        tamper(&dir, |db| match change {
            "d" => {
                let k = first_key(db, "S/", |v| v.starts_with(br#"{"enrolled""#));
                edit_json(db, &k, |v| {
                    v["earned"] = serde_json::json!(v["earned"].as_i64().unwrap() + 1)
                });
            }
            "m" => {
                let k = first_key(db, "S/", |v| v.starts_with(br#"{"members""#));
                edit_json(db, &k, |v| v["outstanding"] = serde_json::json!(0));
            }
            _ => {
                let k = first_key(db, "S/", |v| v.starts_with(br#"{"enrolled""#));
                let mut k = k[..k.iter().position(|b| *b == 0).unwrap() + 1].to_vec();
                k.extend_from_slice(b"d1999-01-01");
                db.put(k, br#"{"enrolled":1,"earned":0,"redeemed":0,"expired":0,"reversed":0,"adjusted":0,"transferred":0}"#).unwrap();
            }
        });
        let (code, problems, _) = verify(&dir);
        assert_eq!(code, Some(1), "{name}: {problems:?}");
        assert!(
            problems.iter().any(|p| p.to_string().contains("S/")),
            "{name}: {problems:?}"
        );
    }
}

/// A transaction line changed behind the store (a reason reworded, the JSON still sound,
/// every balance still adding up) breaks its account's hash chain: `verify` names it.
#[test]
fn a_reworded_transaction_breaks_the_hash_chain() {
    let (_t, dir) = built("verify-chain");
    let mut changed = Vec::new();
    tamper(&dir, |db| {
        let k = first_key(db, "o/", |v| {
            v.starts_with(br#"{"kind":"transaction""#)
                && v.windows(12).any(|w| w == br#""rounding":""#)
        });
        let v = db.get(&k).unwrap().unwrap();
        let text = String::from_utf8(v).unwrap();
        let at = text.find("\"rounding\":\"").unwrap() + 12;
        let mut t = text.clone();
        t.insert(at, 'X');
        db.put(&k, t.as_bytes()).unwrap();
        changed = k;
    });
    let (code, problems, _) = verify(&dir);
    assert_eq!(code, Some(1));
    let chain: Vec<&serde_json::Value> = problems
        .iter()
        .filter(|p| p["check"] == "hash_chain")
        .collect();
    assert!(!chain.is_empty(), "{problems:?}");
    assert_eq!(
        chain[0]["key"],
        String::from_utf8_lossy(&changed).as_ref(),
        "{problems:?}"
    );
    assert_eq!(
        checks(&problems),
        ["hash_chain"],
        "only the chain: {problems:?}"
    );
}
