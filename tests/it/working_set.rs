//! The streaming engine's bounded working set: a folder that keeps few accounts in memory
//! (none at all between batches, or a handful) and reads the others from RocksDB when a
//! record or a due effect needs them prints exactly what the engine prints with every
//! account in memory, over every acceptance scenario and over generated traffic with
//! refunds, commands, program updates, expiries and tier evaluations.

use std::path::Path;

use loyalty_cli::loadgen::{LoadArgs, Traffic};
use loyalty_core::fold::fold_to_string;
use loyalty_core::Engine;
use loyalty_store::Store;
use loyalty_stream::folder::Folder;
use loyalty_stream::logrec::Meta;
use loyalty_stream::Settings;
use serde_json::{json, Value};

use crate::support::TempDir;

/// The records of a scenario as the streaming engine's log holds them: its programs as
/// `loyalty.program.updated` records at the time of its first event, its events, and a
/// `clock.tick` for `--until`.
fn scenario_log(s: &Value) -> Vec<String> {
    let events = s["events"].as_array().cloned().unwrap_or_default();
    let first = events
        .iter()
        .find_map(|e| e["created"].as_str())
        .unwrap_or("2026-01-01T00:00:00Z")
        .to_string();
    let mut log: Vec<String> = s["config"]["programs"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| {
            json!({"id": format!("cfg_ws_{i}"), "type": "loyalty.program.updated",
                "created": first, "data": p})
            .to_string()
        })
        .collect();
    for e in events {
        log.push(match e {
            Value::String(raw) => raw,
            other => other.to_string(),
        });
    }
    if let Some(until) = s["until"].as_str() {
        log.push(
            json!({"id": "tick_ws_until", "type": "clock.tick", "created": until, "data": {}})
                .to_string(),
        );
    }
    log
}

/// Folds `log` with every account in memory: the reference.
fn straight(log: &[String]) -> String {
    fold_to_string(&mut Engine::empty(), log.join("\n").as_bytes(), None).unwrap()
}

/// Folds `log` the way `loyalty run` and `replay` do, committing every `every` records and
/// keeping at most `cache` accounts between batches; returns what the stored state prints
/// (`loyalty export`) and the most accounts held in memory after a commit.
fn streamed(dir: &Path, log: &[String], cache: usize, every: usize) -> (String, usize) {
    streamed_reading(
        dir,
        log,
        cache,
        every,
        loyalty_stream::folder::READ_AHEAD,
        Commit::Each,
    )
}

/// How a streamed fold commits.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Commit {
    /// Each batch written before the next folds (an instance of a group, `--group`).
    Each,
    /// Each batch written while the next folds, into a state that keeps which ids it wrote
    /// (`loyalty replay`).
    Pipelined,
    /// Each batch written while the next folds, without that filter, and every third batch
    /// waited for before the next folds, as when nothing more has arrived (`loyalty run`).
    Run,
    /// [`Commit::Pipelined`], each batch's write held until the next batch is committed:
    /// the next batch's records never find it written.
    PipelinedLate,
    /// Each batch written, then the state opened anew, as a restarted engine does.
    Restart,
}

/// [`streamed`], reading `read_ahead` entries of the due index past those a record needs,
/// committing as `commit` says.
fn streamed_reading(
    dir: &Path,
    log: &[String],
    cache: usize,
    every: usize,
    read_ahead: usize,
    commit: Commit,
) -> (String, usize) {
    let mut store = Store::open(dir).unwrap();
    if matches!(commit, Commit::Pipelined | Commit::PipelinedLate) {
        // As replay folds: into a new state that keeps which ids it wrote.
        assert!(store.track_written().unwrap());
    }
    let store = std::sync::Arc::new(store);
    let settings = Settings::new("unused:9092");
    let open = || {
        let mut f = Folder::open(&store, false).unwrap();
        f.ws.account_cache = cache;
        f.ws.read_ahead = read_ahead;
        f
    };
    let mut f = open();
    let mut most = 0;
    for (i, r) in log.iter().enumerate() {
        let meta = Meta::default();
        f.fold(&store, &settings, 0, i as i64, &meta, r.as_bytes())
            .unwrap();
        if i % every == every - 1 {
            if matches!(
                commit,
                Commit::Pipelined | Commit::PipelinedLate | Commit::Run
            ) {
                f.write_late(commit == Commit::PipelinedLate);
                f.commit_pipelined(&store).unwrap();
                if commit == Commit::Run && (i / every) % 3 == 2 {
                    f.finish().unwrap();
                }
            } else {
                f.commit(&store).unwrap();
            }
            most = most.max(f.ws.account_count());
            if commit == Commit::Restart {
                f = open();
            }
        }
    }
    f.commit(&store).unwrap();
    most = most.max(f.ws.account_count());
    (sound_export(&store), most)
}

/// What a stored state prints (`loyalty export`), once `verify` found it sound: the
/// indexes the working set is loaded by included.
fn sound_export(store: &Store) -> String {
    assert_eq!(store.verify().unwrap(), vec![]);
    let mut text = String::new();
    store
        .export(|l| {
            text.push_str(l);
            text.push('\n');
        })
        .unwrap();
    text
}

fn check(name: &str, log: &[String]) {
    let want = straight(log);
    for (cache, every, read_ahead, commit) in [
        (0, 1, 512, Commit::Each),
        (0, 7, 0, Commit::Each),
        (3, 5, 2, Commit::Each),
        (1_000_000, 50, 512, Commit::Each),
        (1_000_000, 1, 512, Commit::Restart),
        (0, 1, 512, Commit::Pipelined),
        (0, 7, 0, Commit::Pipelined),
        (0, 7, 0, Commit::PipelinedLate),
        (3, 5, 2, Commit::PipelinedLate),
        (1_000_000, 50, 512, Commit::Pipelined),
        (0, 1, 512, Commit::Run),
        (3, 5, 2, Commit::Run),
        (1_000_000, 50, 512, Commit::Run),
    ] {
        let t = TempDir::new("working-set");
        let (got, _) = streamed_reading(&t.0.join("state"), log, cache, every, read_ahead, commit);
        assert!(
            got == want,
            "{name}: with {cache} accounts cached, committing every {every} records, reading \
             {read_ahead} ahead, {commit:?}, the stored state prints differently; \
             first difference at line {}",
            got.lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(got.lines().count().min(want.lines().count()))
        );
    }
}

#[test]
fn every_scenario_folds_alike_with_a_small_working_set() {
    let mut files: Vec<_> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
    assert!(files.len() > 40, "the scenarios are there");
    // The public scenarios too, when ../shared is beside the clone (as in CI).
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/scenarios");
    if let Ok(dir) = std::fs::read_dir(shared) {
        files.extend(
            dir.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "json")),
        );
    }
    files.sort();
    for file in files {
        let s: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        check(&file.display().to_string(), &scenario_log(&s));
    }
}

/// `n` generated records of `customers` over two years from 2026-01-01, with a program
/// update every 400 records.
fn traffic(config: &str, n: u64, customers: u64) -> Vec<String> {
    let t = TempDir::new("working-set-cfg");
    let file = t.write("programs.json", config);
    let args = LoadArgs {
        out: None,
        brokers: None,
        topic: None,
        events: n,
        customers,
        customer_offset: 0,
        seed: 7,
        id_prefix: "evt".into(),
        refunds_per_mille: 60,
        commands_per_mille: 60,
        config: Some(file),
        program_update_every: 400,
        reward: "rwd_free_coffee".into(),
        rate: 0,
        wait_topic: None,
        wait_count: None,
    };
    let program = serde_json::from_str::<Value>(config).unwrap()["programs"][0].clone();
    let mut log = vec![json!({"id": "cfg_ws", "type": "loyalty.program.updated",
        "created": "2026-01-01T00:00:00Z", "data": program})
    .to_string()];
    log.extend(
        Traffic::new(&args, 1_767_225_600, 2 * 365 * 86_400)
            .unwrap()
            .take(n)
            .map(|g| g.value),
    );
    log
}

fn example_config() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/programs.example.json"),
    )
    .unwrap()
}

#[test]
fn generated_traffic_folds_alike_with_a_small_working_set() {
    // Rolling tier periods, expiry with warnings, refunds, adjustments, redemptions and
    // program updates (which re-evaluate every member).
    check("rolling", &traffic(&example_config(), 3_000, 120));
    // Calendar quarters: every close evaluates every member of the program.
    let calendar = example_config().replace(
        r#""period": {"type": "rolling", "months": 12}"#,
        r#""period": {"type": "calendar", "months": 3, "start": "01-01"}"#,
    );
    assert_ne!(calendar, example_config(), "the period was replaced");
    check("calendar", &traffic(&calendar, 3_000, 120));
}

/// Folds `records` (numbered from `from` in the log) into the state at `dir` through a
/// folder that keeps no account between batches, committing every 10 records.
fn fold_part(dir: &Path, records: &[String], from: usize) {
    let store = Store::open(dir).unwrap();
    let settings = Settings::new("unused:9092");
    let mut f = Folder::open(&store, false).unwrap();
    f.ws.account_cache = 0;
    for (i, r) in records.iter().enumerate() {
        let offset = (from + i) as i64;
        f.fold(&store, &settings, 0, offset, &Meta::default(), r.as_bytes())
            .unwrap();
        if i % 10 == 9 {
            f.commit(&store).unwrap();
        }
    }
    f.commit(&store).unwrap();
}

/// Removes the due and code indexes from a state, as a version without them leaves it:
/// with `mark`, `m/index` is set to it (a rollback: the mark of the last version that kept
/// them stays behind), without, removed too.
fn strip_indexes(dir: &Path, mark: Option<&[u8]>) {
    let db = rocksdb::DB::open_default(dir).unwrap();
    let keys: Vec<Vec<u8>> = db
        .iterator(rocksdb::IteratorMode::Start)
        .map(|kv| kv.unwrap().0.to_vec())
        .filter(|k| k.starts_with(b"d/") || k.starts_with(b"r/"))
        .collect();
    assert!(keys.len() > 50, "the indexes were written: {}", keys.len());
    for k in keys {
        db.delete(k).unwrap();
    }
    match mark {
        Some(m) => db.put(b"m/index", m).unwrap(),
        None => db.delete(b"m/index").unwrap(),
    }
}

/// A state written before the due and code indexes existed gets them when a folder first
/// opens it, and so does a state that a version without them wrote to after this one (a
/// rollback and back): it folds on as if it always had them.
#[test]
fn a_state_without_the_indexes_is_indexed_when_opened() {
    let log = traffic(&example_config(), 1_500, 100);
    let want = straight(&log);
    let t = TempDir::new("working-set-migrate");
    let dir = t.0.join("state");
    fold_part(&dir, &log[..800], 0);
    strip_indexes(&dir, None);
    fold_part(&dir, &log[800..1_100], 800);
    // "An earlier version" folds the next records: its commits move the log positions,
    // and leave neither index entries nor a new mark.
    let mark = rocksdb::DB::open_default(&dir)
        .unwrap()
        .get(b"m/index")
        .unwrap()
        .expect("indexed");
    fold_part(&dir, &log[1_100..1_300], 1_100);
    strip_indexes(&dir, Some(&mark));
    {
        // Marked whole up to other positions: verify leaves the indexes to the rebuild.
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.verify().unwrap(), vec![]);
    }
    fold_part(&dir, &log[1_300..], 1_300);
    let got = sound_export(&Store::open(&dir).unwrap());
    assert!(got == want, "the state folded on differs");
}

#[test]
fn the_working_set_stays_within_its_bound() {
    let log = traffic(&example_config(), 2_000, 1_000);
    let t = TempDir::new("working-set-bound");
    let (_, most) = streamed(&t.0.join("state"), &log, 50, 20);
    // Between batches: the cache, plus the accounts changed since the last eviction (at
    // most two batches' worth, a few accounts a record).
    assert!(most <= 50 + 2 * 20 * 3, "{most} accounts held in memory");
    let (_, all) = streamed(&t.0.join("state2"), &log, 1_000_000, 20);
    assert!(all > 500, "without a bound every account stays: {all}");
}

#[test]
fn a_shared_referral_code_stays_with_the_smaller_account_across_evictions() {
    // Found by search: in prog_c these two customers' accounts get the same code,
    // CGLR7FAP; loy_7668… (cus_930759) is the smaller id and keeps it.
    let program = json!({"id": "prog_c", "currency": "EUR", "autoEnroll": true,
        "earningRules": [
            {"id": "rule_p", "trigger": "payment.completed",
             "award": {"type": "per_amount", "per": 100, "points": 1}},
            {"id": "rule_ref", "trigger": "referral.converted", "recipient": "referrer",
             "award": {"type": "fixed", "points": 1000}}]});
    let pay = |id: &str, customer: &str, t: &str| {
        json!({"id": id, "type": "payment.completed", "created": t,
            "data": {"id": format!("pay_{id}"), "customer": customer, "amount": 1000, "currency": "EUR"}})
        .to_string()
    };
    let log = vec![
        json!({"id": "cfg", "type": "loyalty.program.updated", "created": "2026-01-01T00:00:00Z",
            "data": program})
        .to_string(),
        pay("e1", "cus_930759", "2026-01-02T00:00:00Z"),
        pay("e2", "cus_208270", "2026-01-03T00:00:00Z"),
        json!({"id": "n1", "type": "loyalty.account.enroll", "created": "2026-01-04T00:00:00Z",
            "data": {"customer": "cus_new", "program": "prog_c", "referralCode": "CGLR7FAP"}})
        .to_string(),
        pay("e3", "cus_new", "2026-01-05T00:00:00Z"),
    ];
    let want = straight(&log);
    let referrer_award = want
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["kind"] == "transaction" && l["rule"] == "rule_ref")
        .expect("the referrer is awarded");
    assert_eq!(referrer_award["account"], "loy_7668d0517beaed64422bc89c");
    check("shared code", &log);
}

/// Effects that fall due at or before the clock when they are scheduled (a warning due at
/// once, the lot of a late payment that expired already, a late enrolment's birthday) are
/// carried out at the next advance of the clock, also when their account left the working
/// set, or the engine restarted, in between.
#[test]
fn effects_already_due_survive_eviction_and_restart() {
    let program = json!({"id": "prog_o", "currency": "EUR", "autoEnroll": true,
        "pointsExpiry": {"months": 1, "warnDays": 31},
        "earningRules": [
            {"id": "rule_p", "trigger": "payment.completed", "award": {"type": "fixed", "points": 10}},
            {"id": "rule_b", "trigger": "customer.birthday", "award": {"type": "fixed", "points": 5}}]});
    let pay = |id: &str, customer: &str, t: &str| {
        json!({"id": id, "type": "payment.completed", "created": t,
            "data": {"id": format!("pay_{id}"), "customer": customer, "amount": 1000, "currency": "EUR"}})
        .to_string()
    };
    let tick = |id: &str, t: &str| {
        json!({"id": id, "type": "clock.tick", "created": t, "data": {}}).to_string()
    };
    let log = vec![
        json!({"id": "cfg", "type": "loyalty.program.updated", "created": "2026-03-01T00:00:00Z",
            "data": program})
        .to_string(),
        // Warned at once: the warning falls due at the payment's own time.
        pay("e1", "cus_1", "2026-03-01T10:00:00Z"),
        tick("t1", "2026-03-01T10:01:00Z"),
        tick("t2", "2026-03-05T00:00:00Z"),
        // Late: its lot expired a month before the clock.
        pay("e2", "cus_2", "2026-01-01T00:00:00Z"),
        tick("t3", "2026-03-06T00:00:00Z"),
        // Late, with a birthday between its time and the clock.
        json!({"id": "n3", "type": "loyalty.account.enroll", "created": "2025-06-01T00:00:00Z",
            "data": {"customer": "cus_3", "program": "prog_o", "birthday": "07-01"}})
        .to_string(),
        tick("t4", "2026-03-07T00:00:00Z"),
        tick("t5", "2026-08-01T00:00:00Z"),
    ];
    let want = straight(&log);
    let lines: Vec<Value> = want
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events = |kind: &str| lines.iter().filter(|l| l["type"] == kind).count();
    assert!(events("loyalty.points.expiring") >= 1, "{want}");
    assert!(
        lines
            .iter()
            .any(|l| l["kind"] == "transaction" && l["type"] == "expiry"),
        "{want}"
    );
    assert!(
        lines
            .iter()
            .filter(|l| l["kind"] == "transaction" && l["rule"] == "rule_b")
            .count()
            >= 2,
        "two birthdays: {want}"
    );
    check("overdue", &log);
}

/// A referral code given in an enrolment is any string: one holding a `/` must not find
/// another program's code through the code index (`r/{code}/{program}`).
#[test]
fn a_code_naming_another_programs_code_is_refused_alike() {
    let holder = loyalty_core::ids::account_id("b/a", "cus_h");
    let code = loyalty_core::ids::referral_code(&holder);
    let program = |id: &str| {
        json!({"id": id, "currency": "EUR", "autoEnroll": false,
            "earningRules": [{"id": "rule_p", "trigger": "payment.completed",
                "award": {"type": "fixed", "points": 10}}]})
    };
    let enroll = |id: &str, customer: &str, program: &str, code: Option<String>| {
        let mut data = json!({"customer": customer, "program": program});
        if let Some(c) = code {
            data["referralCode"] = c.into();
        }
        json!({"id": id, "type": "loyalty.account.enroll", "created": "2026-01-02T00:00:00Z",
            "data": data})
        .to_string()
    };
    let log = vec![
        json!({"id": "cfg_a", "type": "loyalty.program.updated", "created": "2026-01-01T00:00:00Z",
            "data": program("a")})
        .to_string(),
        json!({"id": "cfg_ba", "type": "loyalty.program.updated", "created": "2026-01-01T00:00:00Z",
            "data": program("b/a")})
        .to_string(),
        enroll("n1", "cus_h", "b/a", None),
        enroll("n2", "cus_x", "a", Some(format!("{code}/b"))),
    ];
    let want = straight(&log);
    assert!(
        want.lines()
            .any(|l| l.contains("\"reason\":\"invalid\"") && l.contains("n2")),
        "the full engine refuses the code: {want}"
    );
    check("slash code", &log);
}

pub(crate) mod random {
    //! Replay equals live with a working set, over random logs: payments (some late),
    //! refunds, adjustments, transfers, redemptions, enrolments with birthdays and referral
    //! codes, upstream referrals, ticks and program updates, under rolling or calendar
    //! tiers and expiry whose warning may fall due at once; committed at random points,
    //! keeping few or no accounts, sometimes restarting after every batch.
    use super::*;
    use proptest::prelude::*;

    fn program(calendar: bool, warn_days: u32) -> Value {
        let period = if calendar {
            json!({"type": "calendar", "months": 1, "start": "01-01"})
        } else {
            json!({"type": "rolling", "months": 1})
        };
        json!({"id": "prog_r", "currency": "EUR", "autoEnroll": true, "timezone": "Europe/Berlin",
            "pointsExpiry": {"months": 1, "warnDays": warn_days},
            "earningRules": [
                {"id": "rule_p", "trigger": "payment.completed",
                 "award": {"type": "per_amount", "per": 100, "points": 1}},
                {"id": "rule_ref", "trigger": "referral.converted", "award": {"type": "fixed", "points": 30}},
                {"id": "rule_b", "trigger": "customer.birthday", "award": {"type": "fixed", "points": 5}}],
            "tierConfig": {"qualifyOn": "spend", "period": period, "softLanding": true,
                "tiers": [{"name": "M", "rank": 0, "threshold": 0},
                          {"name": "S", "rank": 1, "threshold": 5000},
                          {"name": "G", "rank": 2, "threshold": 20000}]},
            "rewards": [{"id": "rwd_a", "cost": 40, "stock": 5}]})
    }

    const BASE: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    pub(crate) fn log() -> impl Strategy<Value = (bool, u32, Vec<String>)> {
        let item = (0u8..12, 0u8..8, 1i64..20_000, 0i64..(120 * 86_400), 0u8..8);
        (any::<bool>(), prop::sample::select(vec![3u32, 31, 45]), prop::collection::vec(item, 1..70))
            .prop_map(|(calendar, warn, items)| {
                let prog = program(calendar, warn);
                let at = |t: i64| loyalty_core::time::Timestamp(BASE + t).to_string();
                let mut out = vec![json!({"id": "cfg", "type": "loyalty.program.updated",
                    "created": at(0), "data": prog}).to_string()];
                let mut t = 0;
                for (i, (kind, c, n, step, late)) in items.into_iter().enumerate() {
                    // One record in eight is late: before the clock.
                    t = if late == 0 { step / 4 } else { t.max(step) };
                    let cus = format!("cus_{c}");
                    let other = format!("cus_{}", (c + 1) % 8);
                    // Customers 8 to 15 enrol with a code, and pay as often as the others.
                    let cus = if kind < 5 && n % 2 == 0 { format!("cus_{}", c + 8) } else { cus };
                    let (kind, data) = match kind {
                        0..=4 => ("payment.completed", json!({"id": format!("pay{i}"), "customer": cus, "amount": n, "currency": "EUR"})),
                        5 => ("payment.refunded", json!({"id": format!("re{i}"), "payment": format!("pay{}", i.saturating_sub(2)), "customer": cus, "amount": n / 4, "currency": "EUR"})),
                        6 => ("loyalty.points.adjust", json!({"customer": cus, "program": "prog_r", "points": n % 100 + 1, "reason": "p"})),
                        7 => ("loyalty.points.transfer", json!({"program": "prog_r", "from": cus, "to": other, "points": n % 50 + 1})),
                        8 => ("loyalty.redemption.create", json!({"customer": cus, "program": "prog_r", "reward": "rwd_a"})),
                        9 => {
                            // Enrolled by a member's code; its first payment converts.
                            let referrer = loyalty_core::ids::referral_code(&loyalty_core::ids::account_id("prog_r", &other));
                            ("loyalty.account.enroll", json!({"customer": format!("cus_{}", c + 8), "program": "prog_r",
                                "birthday": format!("{:02}-{:02}", n % 12 + 1, n % 28 + 1), "referralCode": referrer}))
                        }
                        10 => ("referral.converted", json!({"referrer": cus, "referee": other})),
                        _ => {
                            if n % 5 == 0 {
                                ("loyalty.program.updated", program(!calendar, warn))
                            } else {
                                ("clock.tick", json!({}))
                            }
                        }
                    };
                    out.push(json!({"id": format!("r{i}"), "type": kind, "created": at(t), "data": data}).to_string());
                }
                (calendar, warn, out)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

        #[test]
        fn a_working_set_folds_like_the_whole_state(
            (_calendar, _warn, log) in log(),
            every in 1usize..6,
            cache in 0usize..4,
            commit in prop_oneof![
                Just(super::Commit::Each),
                Just(super::Commit::Pipelined),
                Just(super::Commit::PipelinedLate),
                Just(super::Commit::Run),
                Just(super::Commit::Restart),
            ],
        ) {
            let want = straight(&log);
            let t = TempDir::new("working-set-prop");
            let (got, _) = streamed_reading(&t.0.join("state"), &log, cache, every, 1, commit);
            prop_assert!(got == want, "the stored state differs:\n{got}\n---\n{want}");
        }
    }
}

/// Between batches, a working set over its bound keeps the accounts changed most recently:
/// down to three quarters of the bound, the least recently changed go first, and a member
/// that comes back is read again from the store with what it had.
#[test]
fn the_least_recently_changed_accounts_go_first() {
    const PROGRAM: &str = r#"{"id":"prog_lru","currency":"EUR","autoEnroll":true,"earningRules":[{"id":"r","trigger":"payment.completed","award":{"type":"per_amount","per":100,"points":1}}]}"#;
    let dir = TempDir::new("lru");
    let store = Store::open(&dir.0).unwrap();
    let settings = Settings::new("unused:9092");
    let mut f = Folder::open(&store, false).unwrap();
    f.ws.account_cache = 8;
    let mut offset = 0;
    let mut fold = |f: &mut Folder, record: String| {
        f.fold(
            &store,
            &settings,
            0,
            offset,
            &Meta::default(),
            record.as_bytes(),
        )
        .unwrap();
        offset += 1;
    };
    fold(
        &mut f,
        json!({"id": "cfg_lru", "type": "loyalty.program.updated",
            "created": "2026-01-01T00:00:00Z", "data": serde_json::from_str::<Value>(PROGRAM).unwrap()})
        .to_string(),
    );
    let pay = |n: usize, customer: usize| {
        json!({"id": format!("e{n}"), "type": "payment.completed",
            "created": format!("2026-01-02T00:00:{:02}Z", n % 60),
            "data": {"id": format!("p{n}"), "customer": format!("c{customer}"),
                "amount": 1000, "currency": "EUR"}})
        .to_string()
    };
    let id = |customer: usize| loyalty_core::ids::account_id("prog_lru", &format!("c{customer}"));
    // Customers 0 to 7, one batch each, then 0 and 1 again: 2 to 7 are the least recent.
    let order = [0, 1, 2, 3, 4, 5, 6, 7, 0, 1];
    for (n, c) in order.iter().enumerate() {
        fold(&mut f, pay(n, *c));
        f.commit(&store).unwrap();
    }
    assert_eq!(f.ws.account_count(), 8, "within the bound: all kept");
    // A ninth: over the bound, down to six, the most recent kept.
    fold(&mut f, pay(10, 8));
    f.commit(&store).unwrap();
    let held: Vec<usize> = (0..9).filter(|c| f.ws.holds_account(&id(*c))).collect();
    assert_eq!(held, vec![0, 1, 5, 6, 7, 8]);
    // Customer 2 comes back: read again, with the points it had.
    let loaded = f.ws.loaded;
    fold(&mut f, pay(11, 2));
    assert_eq!(f.ws.loaded, loaded + 1);
    assert_eq!(f.ws.engine.state().accounts[&*id(2)].balance, 20);
    f.commit(&store).unwrap();
}
