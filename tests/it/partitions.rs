//! Transfers, referrals and a reward's stock across partitions (docs/scale-out.md, section 4), in
//! process and seeded.
//!
//! A log of three partitions, each folded by its own engine. The harness plays what Kafka
//! and crashes can do to the messages between them: a partition folds some records, then
//! commits them or crashes (losing what it folded since its last commit, which it folds
//! again); its committed outbox is delivered in any order, a message is sometimes appended
//! twice, and one whose delivery was not acknowledged is sent again. Every choice comes from
//! the seed, so a failing seed (printed) reproduces.
//!
//! The traffic is chosen so that its result does not depend on timing across partitions
//! (docs/scale-out.md, section 8): every member can afford all it sends without what it
//! receives, some transfers ask for more than anyone ever holds, and some go to customers
//! who never enrol. Then, for every seed:
//! - every balance is the balance of one engine folding the same input alone;
//! - each transfer that was not refused has one `transfer_out` and one `transfer_in`
//!   (on the receiver, or back on the sender with `metadata.returned: true` when the
//!   receiver has no account), and one `loyalty.points.transferred` naming both, exactly
//!   when it reached the receiver; a refused one has neither, and its `rejected` line;
//! - each referral converts once: the referrer's rule on the referrer's partition, the
//!   referee's on the referee's, both naming the referee's payment (or the upstream
//!   `referral.converted`) as source, whichever arrives first at the code's partition, the
//!   code's claim or the conversion;
//! - each redemption of a reward with a stock has one outcome, redeemed or refused
//!   `out_of_stock`; exactly the stock is granted (more is asked for); a refused one moves
//!   no points, and no cost stays held;
//! - each partition's ledger is what a fresh engine folding that partition's log prints;
//! - every copy of a message is the same bytes.

use std::collections::{BTreeMap, HashMap};

use loyalty_core::partition::{self, Partitioning};
use loyalty_core::{parse_config, Config, Engine, Output};
use serde_json::{json, Value};

const PARTITIONS: u32 = 3;
const PROGRAM: &str = "prog_p";
const CONFIG: &str = r#"{"programs":[{"id":"prog_p","currency":"EUR","earningRules":[
  {"id":"rule_buy","trigger":"payment.completed","award":{"type":"fixed","points":1}},
  {"id":"rule_referrer","trigger":"referral.converted","recipient":"referrer",
   "award":{"type":"fixed","points":100}},
  {"id":"rule_referee","trigger":"referral.converted","recipient":"referee",
   "award":{"type":"fixed","points":50}}],
  "rewards":[{"id":"rwd_mug","cost":100,"stock":5},{"id":"rwd_cap","cost":40,"stock":3}]}]}"#;
/// Units of each reward there are.
const STOCK: [(&str, i64, i64); 2] = [("rwd_mug", 100, 5), ("rwd_cap", 40, 3)];

/// splitmix64: a few lines, the same numbers on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// One partition: its log, what it has committed, and what it folded since.
struct Partition {
    log: Vec<String>,
    committed: Engine,
    committed_at: usize,
    ledger: Vec<String>,
    /// Committed messages not yet acknowledged: (destination, key, record).
    outbox: Vec<(u32, String)>,
    work: Engine,
    work_at: usize,
    work_lines: Vec<String>,
    work_messages: Vec<(u32, String)>,
}

impl Partition {
    fn new(config: &Config, me: u32) -> Partition {
        let mut engine = Engine::new(config);
        engine.track_changes(false);
        engine.set_partitioning(Some(Partitioning {
            me,
            count: PARTITIONS,
        }));
        Partition {
            log: Vec::new(),
            committed: engine.clone(),
            committed_at: 0,
            ledger: Vec::new(),
            outbox: Vec::new(),
            work: engine,
            work_at: 0,
            work_lines: Vec::new(),
            work_messages: Vec::new(),
        }
    }

    fn fold_one(&mut self) {
        let mut out = Vec::new();
        self.work.apply(self.log[self.work_at].as_bytes(), &mut out);
        self.work_at += 1;
        for o in &out {
            if let Output::Message(m) = o {
                self.work_messages.push((m.partition, m.record.clone()));
            }
            self.work_lines.push(o.to_json_line());
        }
    }

    fn commit(&mut self) {
        self.committed = self.work.clone();
        self.committed_at = self.work_at;
        self.ledger.append(&mut self.work_lines);
        self.outbox.append(&mut self.work_messages);
    }

    fn crash(&mut self) {
        self.work = self.committed.clone();
        self.work_at = self.committed_at;
        self.work_lines.clear();
        self.work_messages.clear();
    }

    fn quiet(&self) -> bool {
        self.committed_at == self.log.len()
            && self.work_at == self.log.len()
            && self.outbox.is_empty()
    }
}

fn record(n: usize, kind: &str, data: Value) -> String {
    json!({
        "id": format!("in_{n}"),
        "type": kind,
        "created": format!("2026-01-01T{:02}:{:02}:{:02}Z", n / 3600, n / 60 % 60, n % 60),
        "data": data,
    })
    .to_string()
}

/// The input of one seed: `(partition, record)` in order, and the transfers by record id
/// with whether each can be afforded and whether its receiver enrols.
struct Input {
    records: Vec<(u32, String)>,
    /// Transfer id → (from, to, points, refused, to a customer who never enrols).
    transfers: BTreeMap<String, (String, String, i64, bool, bool)>,
    /// Redemption id → (customer, reward).
    redemptions: BTreeMap<String, (String, String)>,
    /// The customers who redeem (and do nothing else).
    redeemers: Vec<String>,
    /// Conversion record id → (referrer, referee).
    conversions: BTreeMap<String, (String, String)>,
}

fn input(rng: &mut Rng) -> Input {
    let members: Vec<String> = (0..10).map(|i| format!("cus_{i}")).collect();
    let ghosts = ["cus_ghost_a", "cus_ghost_b"];
    let mut records = Vec::new();
    let mut transfers = BTreeMap::new();
    let push = |records: &mut Vec<(u32, String)>, key: &str, kind: &str, data: Value| {
        let n = records.len();
        records.push((
            partition::of(key.as_bytes(), PARTITIONS),
            record(n, kind, data),
        ));
        format!("in_{n}")
    };
    // A member with 1,000 points to give or spend.
    let open = |records: &mut Vec<(u32, String)>, c: &str| {
        push(
            records,
            c,
            "loyalty.account.enroll",
            json!({"customer": c, "program": PROGRAM}),
        );
        push(
            records,
            c,
            "loyalty.points.adjust",
            json!({"customer": c, "program": PROGRAM, "points": 1000, "reason": "opening"}),
        );
    };
    let mut left: HashMap<&str, i64> = HashMap::new();
    for c in &members {
        open(&mut records, c);
        left.insert(c, 1000);
    }
    for _ in 0..30 {
        let from = &members[rng.below(members.len())];
        let to = if rng.chance(20) {
            ghosts[rng.below(2)].to_string()
        } else {
            let mut t = &members[rng.below(members.len())];
            while t == from {
                t = &members[rng.below(members.len())];
            }
            t.clone()
        };
        // Refused whatever the timing (more than all the points there are), or affordable
        // from what the sender was given, whatever it receives.
        let refused = rng.chance(15);
        let points = if refused {
            1_000_000
        } else {
            let room = left[from.as_str()];
            if room == 0 {
                continue;
            }
            1 + rng.below(room.min(300) as usize) as i64
        };
        if !refused {
            *left.get_mut(from.as_str()).expect("a member") -= points;
        }
        let id = push(
            &mut records,
            from,
            "loyalty.points.transfer",
            json!({"program": PROGRAM, "from": from, "to": to, "points": points}),
        );
        let ghost = ghosts.contains(&to.as_str());
        transfers.insert(id, (from.clone(), to, points, refused, ghost));
    }
    // Redeemers: more asked for than there is of each reward, in any order.
    let redeemers: Vec<String> = (0..8).map(|i| format!("cus_r{i}")).collect();
    let mut redemptions = BTreeMap::new();
    for c in &redeemers {
        open(&mut records, c);
    }
    for _ in 0..14 {
        let c = &redeemers[rng.below(redeemers.len())];
        let (reward, _, _) = STOCK[rng.below(STOCK.len())];
        let id = push(
            &mut records,
            c,
            "loyalty.redemption.create",
            json!({"customer": c, "program": PROGRAM, "reward": reward}),
        );
        redemptions.insert(id, (c.clone(), reward.to_string()));
    }
    // Referees: each enrols with a member's code; its first payment converts it. Two
    // members convert through an upstream `referral.converted` (keyed by the referee).
    let mut conversions = BTreeMap::new();
    for i in 0..6 {
        let referee = format!("cus_f{i}");
        let referrer = &members[rng.below(members.len())];
        let code =
            loyalty_core::ids::referral_code(&loyalty_core::ids::account_id(PROGRAM, referrer));
        push(
            &mut records,
            &referee,
            "loyalty.account.enroll",
            json!({"customer": referee, "program": PROGRAM, "referralCode": code}),
        );
        let pay = records.len();
        let id = push(
            &mut records,
            &referee,
            "payment.completed",
            json!({"id": format!("pay_{pay}"), "customer": referee, "amount": 1000, "currency": "EUR"}),
        );
        conversions.insert(id, (referrer.clone(), referee));
    }
    for _ in 0..2 {
        let referee = &members[rng.below(members.len())];
        let mut referrer = &members[rng.below(members.len())];
        while referrer == referee {
            referrer = &members[rng.below(members.len())];
        }
        let n = records.len();
        let id = push(
            &mut records,
            referee,
            "referral.converted",
            json!({"id": format!("ref_{n}"), "referrer": referrer, "referee": referee}),
        );
        // A member converts once: only its first conversion counts.
        if !conversions.values().any(|(_, r)| r == referee) {
            conversions.insert(id, (referrer.clone(), referee.clone()));
        }
    }
    Input {
        records,
        transfers,
        redemptions,
        redeemers,
        conversions,
    }
}

/// Runs one seed; returns each partition's committed ledger and log.
fn run(seed: u64, config: &Config, input: &Input) -> Vec<Partition> {
    let mut rng = Rng(seed);
    let mut parts: Vec<Partition> = (0..PARTITIONS).map(|p| Partition::new(config, p)).collect();
    let mut next_input = 0;
    let mut steps = 0;
    loop {
        steps += 1;
        let calm = steps > 4_000;
        let p = rng.below(parts.len());
        match rng.below(10) {
            // Upstream: the next input record enters its partition's log.
            0 | 1 if next_input < input.records.len() => {
                let (to, rec) = &input.records[next_input];
                parts[*to as usize].log.push(rec.clone());
                next_input += 1;
            }
            2..=4 if parts[p].work_at < parts[p].log.len() => parts[p].fold_one(),
            5 => parts[p].commit(),
            6 if !calm && rng.chance(30) => parts[p].crash(),
            // One partition (by the seed) is slow to deliver until the end, so that its
            // messages arrive late: a code's claim after the conversion that needs it.
            7 | 8
                if !parts[p].outbox.is_empty()
                    && (calm || p as u64 != seed % u64::from(PARTITIONS) || rng.chance(10)) =>
            {
                // Deliver any message of the outbox (not the oldest first), perhaps twice;
                // an unacknowledged one stays and is sent again later.
                let i = rng.below(parts[p].outbox.len());
                let (to, rec) = parts[p].outbox[i].clone();
                parts[to as usize].log.push(rec.clone());
                if !calm && rng.chance(15) {
                    parts[to as usize].log.push(rec);
                }
                if calm || rng.chance(70) {
                    parts[p].outbox.remove(i);
                }
            }
            _ => {}
        }
        if next_input == input.records.len() && parts.iter().all(Partition::quiet) {
            return parts;
        }
        assert!(
            steps < 200_000,
            "seed {seed}: the partitions never went quiet"
        );
    }
}

fn lines(ledger: &[String]) -> Vec<Value> {
    ledger
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn transfers_across_partitions_are_applied_once_whatever_the_delivery() {
    let config = parse_config(CONFIG).expect("the config validates");
    let mut checked_returns = 0;
    let mut checked_crossings = 0;
    let mut copies_seen = 0;
    let mut remote_redemptions = 0;
    let mut referrals_across = 0;
    let mut conversions_before_claims = 0;
    for seed in 0..120u64 {
        let input = input(&mut Rng(seed ^ 0x5eed));

        let parts = run(seed, &config, &input);

        // The reference: one engine, the whole input, no partitions.
        let mut alone = Engine::new(&config);
        alone.track_changes(false);
        let mut out = Vec::new();
        for (_, rec) in &input.records {
            alone.apply(rec.as_bytes(), &mut out);
        }
        let expected: BTreeMap<String, i128> = alone
            .accounts()
            .map(|a| (a.customer.clone(), a.balance))
            .collect();
        let mut balances = BTreeMap::new();
        for part in &parts {
            for a in part.committed.accounts() {
                assert!(
                    balances.insert(a.customer.clone(), a.balance).is_none(),
                    "seed {seed}: {} has accounts in two partitions",
                    a.customer
                );
            }
        }
        // Who gets a reward's last units depends on timing: the redeemers are checked below.
        let others = |b: &BTreeMap<String, i128>| -> BTreeMap<String, i128> {
            b.iter()
                .filter(|(c, _)| !input.redeemers.contains(c))
                .map(|(c, v)| (c.clone(), *v))
                .collect()
        };
        assert_eq!(
            others(&balances),
            others(&expected),
            "seed {seed}: balances differ from one engine's"
        );

        // Each transfer's sides, across every partition's ledger.
        let all: Vec<(u32, Value)> = parts
            .iter()
            .enumerate()
            .flat_map(|(p, part)| lines(&part.ledger).into_iter().map(move |l| (p as u32, l)))
            .collect();
        for (id, (from, to, points, refused, ghost)) in &input.transfers {
            let of = |kind: &str| -> Vec<&(u32, Value)> {
                all.iter()
                    .filter(|(_, l)| {
                        l["kind"] == "transaction" && l["type"] == kind && l["source"] == *id
                    })
                    .collect()
            };
            let outs = of("transfer_out");
            let ins = of("transfer_in");
            let told: Vec<&(u32, Value)> = all
                .iter()
                .filter(|(_, l)| l["type"] == "loyalty.points.transferred" && l["source"] == *id)
                .collect();
            let rejected: Vec<&(u32, Value)> = all
                .iter()
                .filter(|(_, l)| l["kind"] == "rejected" && l["source"] == *id)
                .collect();
            let local = partition::of(from.as_bytes(), PARTITIONS)
                == partition::of(to.as_bytes(), PARTITIONS);
            if *refused || (*ghost && local) {
                // Refused on the sender's partition: beyond the balance, or (within one
                // partition, as one engine does) to a customer with no account.
                assert!(
                    outs.is_empty() && ins.is_empty(),
                    "seed {seed}: {id} refused but moved points"
                );
                assert_eq!(rejected.len(), 1, "seed {seed}: {id} has no rejected line");
                // Not being enrolled is decided before the balance (SPEC section 2).
                let why = if *ghost && local {
                    "not_enrolled"
                } else {
                    "insufficient_points"
                };
                assert_eq!(rejected[0].1["reason"], why, "seed {seed}: {id}");
                continue;
            }
            assert!(
                rejected.is_empty(),
                "seed {seed}: {id} rejected and applied"
            );
            assert_eq!(
                outs.len(),
                1,
                "seed {seed}: {id} has {} transfer_out",
                outs.len()
            );
            assert_eq!(
                ins.len(),
                1,
                "seed {seed}: {id} has {} transfer_in",
                ins.len()
            );
            let (out_p, out) = outs[0];
            let (in_p, inn) = ins[0];
            assert_eq!(*out_p, partition::of(from.as_bytes(), PARTITIONS));
            assert_eq!(out["points"], json!(-points));
            assert_eq!(inn["points"], json!(points));
            if *ghost {
                assert_eq!(
                    inn["customer"],
                    json!(from),
                    "seed {seed}: {id} not returned to its sender"
                );
                assert_eq!(inn["metadata"], json!({"returned": true}));
                assert_eq!(in_p, out_p);
                assert!(
                    told.is_empty(),
                    "seed {seed}: a returned transfer was announced"
                );
                checked_returns += 1;
            } else {
                assert_eq!(inn["customer"], json!(to));
                assert_eq!(inn["metadata"], json!({}));
                assert_eq!(*in_p, partition::of(to.as_bytes(), PARTITIONS));
                assert_eq!(
                    told.len(),
                    1,
                    "seed {seed}: {id} announced {} times",
                    told.len()
                );
                assert_eq!(
                    told[0].1["data"]["transactions"],
                    json!([out["id"], inn["id"]])
                );
                assert_eq!(told[0].1["data"]["customer"], json!(from));
                if in_p != out_p {
                    checked_crossings += 1;
                }
            }
        }

        // Referrals: each conversion awards each side once, on its own partition.
        for (id, (referrer, referee)) in &input.conversions {
            for (rule, customer, points) in [
                ("rule_referrer", referrer, 100),
                ("rule_referee", referee, 50),
            ] {
                let awards: Vec<&(u32, Value)> = all
                    .iter()
                    .filter(|(_, l)| {
                        l["kind"] == "transaction" && l["rule"] == rule && l["source"] == *id
                    })
                    .collect();
                assert_eq!(
                    awards.len(),
                    1,
                    "seed {seed}: {id} gave {rule} {} times",
                    awards.len()
                );
                let (p, award) = awards[0];
                assert_eq!(award["customer"], json!(customer), "seed {seed}: {id}");
                assert_eq!(award["points"], json!(points));
                assert_eq!(*p, partition::of(customer.as_bytes(), PARTITIONS));
                if *p != partition::of(referee.as_bytes(), PARTITIONS) {
                    referrals_across += 1;
                }
            }
        }
        // How often a conversion reached the code's partition before the code's claim.
        for part in &parts {
            let recs: Vec<Value> = lines(&part.log);
            for (i, r) in recs.iter().enumerate() {
                if r["type"] == partition::REFERRAL_CONVERT
                    && !recs[..i].iter().any(|c| {
                        c["type"] == partition::CODE_CLAIM && c["data"]["code"] == r["data"]["code"]
                    })
                {
                    conversions_before_claims += 1;
                }
            }
            assert!(
                part.committed.state().parked.is_empty(),
                "seed {seed}: a conversion still waits"
            );
        }
        let referral_awards = all
            .iter()
            .filter(|(_, l)| l["rule"] == "rule_referrer" || l["rule"] == "rule_referee")
            .count();
        assert_eq!(
            referral_awards,
            2 * input.conversions.len(),
            "seed {seed}: extra referral awards"
        );

        // A reward's stock: one outcome per redemption, exactly the stock granted, the
        // cost paid only for what was granted, nothing left held.
        let mut granted: BTreeMap<&str, i64> = BTreeMap::new();
        let mut paid: BTreeMap<&str, i128> = BTreeMap::new();
        for (id, (customer, reward)) in &input.redemptions {
            let redeemed: Vec<&(u32, Value)> = all
                .iter()
                .filter(|(_, l)| l["type"] == "loyalty.reward.redeemed" && l["source"] == *id)
                .collect();
            let refused: Vec<&(u32, Value)> = all
                .iter()
                .filter(|(_, l)| l["type"] == "loyalty.redemption.rejected" && l["source"] == *id)
                .collect();
            let txs: Vec<&(u32, Value)> = all
                .iter()
                .filter(|(_, l)| l["kind"] == "transaction" && l["source"] == *id)
                .collect();
            assert_eq!(
                redeemed.len() + refused.len(),
                1,
                "seed {seed}: {id} has {} outcomes",
                redeemed.len() + refused.len()
            );
            let home = partition::of(customer.as_bytes(), PARTITIONS);
            if partition::stock_owner(PROGRAM, reward, PARTITIONS) != home {
                remote_redemptions += 1;
            }
            let (_, cost, _) = STOCK
                .iter()
                .find(|(r, _, _)| r == reward)
                .expect("a reward");
            if let Some((p, l)) = redeemed.first() {
                assert_eq!(*p, home, "seed {seed}: {id} redeemed away from its member");
                assert_eq!(l["data"]["customer"], json!(customer));
                assert_eq!(
                    txs.len(),
                    1,
                    "seed {seed}: {id} has {} transactions",
                    txs.len()
                );
                assert_eq!(txs[0].1["points"], json!(-cost));
                assert_eq!(txs[0].1["metadata"]["redemption"], l["data"]["redemption"]);
                *granted.entry(reward).or_default() += 1;
                *paid.entry(customer).or_default() += i128::from(*cost);
            } else {
                assert_eq!(
                    refused[0].1["data"]["reason"], "out_of_stock",
                    "seed {seed}: {id}"
                );
                assert!(txs.is_empty(), "seed {seed}: refused {id} moved points");
            }
        }
        for (reward, _, stock) in STOCK {
            let asked = input
                .redemptions
                .values()
                .filter(|(_, r)| r == reward)
                .count() as i64;
            let units = granted.get(reward).copied().unwrap_or(0);
            assert_eq!(
                units,
                stock.min(asked),
                "seed {seed}: {reward} granted {units}"
            );
        }
        for c in &input.redeemers {
            let left = 1000 - paid.get(c.as_str()).copied().unwrap_or(0);
            assert_eq!(
                balances[c], left,
                "seed {seed}: {c} paid for what it did not get"
            );
        }
        for (p, part) in parts.iter().enumerate() {
            assert!(
                part.committed.state().holds.is_empty(),
                "seed {seed}: partition {p} holds points"
            );
        }

        // Ids are unique across partitions, and a second copy of a message leaves no trace.
        let mut ids = std::collections::HashSet::new();
        for (p, l) in &all {
            if l["kind"] == "transaction" || l["kind"] == "event" {
                let id = l["id"].as_str().expect("an id").to_string();
                assert!(
                    ids.insert(id),
                    "seed {seed}: partition {p} repeats the id {}",
                    l["id"]
                );
            }
            assert_ne!(l["reason"], "duplicate", "seed {seed}: partition {p}: {l}");
        }

        // A partition's ledger is a function of its log alone.
        for (p, part) in parts.iter().enumerate() {
            let mut fresh = Engine::new(&config);
            fresh.track_changes(false);
            fresh.set_partitioning(Some(Partitioning {
                me: p as u32,
                count: PARTITIONS,
            }));
            let mut replayed = Vec::new();
            for rec in &part.log {
                let mut out = Vec::new();
                fresh.apply(rec.as_bytes(), &mut out);
                replayed.extend(out.iter().map(Output::to_json_line));
            }
            assert_eq!(
                replayed, part.ledger,
                "seed {seed}: partition {p}'s ledger is not its log's"
            );
        }

        // Every copy of a message is the same bytes.
        let mut copies: HashMap<String, &String> = HashMap::new();
        for part in &parts {
            for rec in &part.log {
                let v: Value = serde_json::from_str(rec).expect("a record");
                if let Some(id) = v["id"].as_str().filter(|i| i.starts_with("msg_")) {
                    match copies.get(id) {
                        Some(first) => {
                            assert_eq!(*first, rec, "seed {seed}: two payloads for {id}");
                            copies_seen += 1;
                        }
                        None => {
                            copies.insert(id.to_string(), rec);
                        }
                    }
                }
            }
        }
    }
    // The traffic did reach what it is meant to test.
    assert!(
        checked_returns > 50,
        "only {checked_returns} returned transfers checked"
    );
    assert!(
        conversions_before_claims > 5,
        "only {conversions_before_claims} conversions came before their code's claim"
    );
    assert!(
        referrals_across > 300,
        "only {referrals_across} referral awards crossed partitions"
    );
    assert!(
        remote_redemptions > 500,
        "only {remote_redemptions} redemptions asked another partition for stock"
    );
    assert!(
        copies_seen > 100,
        "only {copies_seen} second copies delivered"
    );
    assert!(
        checked_crossings > 300,
        "only {checked_crossings} crossing transfers checked"
    );
}

/// An engine that folds every partition refuses a partition's message as any other
/// `loyalty.` type that is not a command: such a record only exists in one partition's log.
#[test]
fn messages_are_bad_input_to_an_engine_of_every_partition() {
    let config = parse_config(CONFIG).expect("the config validates");
    let mut engine = Engine::new(&config);
    let credit = record(
        0,
        partition::TRANSFER_CREDIT,
        json!({"program": PROGRAM, "from": "cus_0", "to": "cus_1", "points": 5,
               "source": "t1", "transaction": "ptx_1"}),
    );
    let mut out = Vec::new();
    engine.apply(credit.as_bytes(), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].to_json_line(),
        r#"{"kind":"rejected","source":"in_0","reason":"invalid","detail":"type: loyalty.transfer.credit is not a command"}"#
    );
}

/// A held cost cannot be taken by an adjustment, and a grant that finds the points gone
/// (they expired while the owner decided) is refused `insufficient_points` and gives its
/// unit back to the owner, which can then grant it again.
#[test]
fn a_grant_the_member_can_no_longer_pay_gives_the_unit_back() {
    let config = parse_config(
        r#"{"programs":[{"id":"prog_x","currency":"EUR","pointsExpiry":{"months":1},
            "rewards":[{"id":"rwd_mug","cost":100,"stock":1}]}]}"#,
    )
    .expect("the config validates");
    let owner = partition::stock_owner("prog_x", "rwd_mug", PARTITIONS);
    let customer = (0..)
        .map(|i| format!("cus_{i}"))
        .find(|c| partition::of(c.as_bytes(), PARTITIONS) != owner)
        .expect("a customer of another partition");
    let engine = |me: u32| {
        let mut e = Engine::new(&config);
        e.set_partitioning(Some(Partitioning {
            me,
            count: PARTITIONS,
        }));
        e
    };
    let mut member = engine(partition::of(customer.as_bytes(), PARTITIONS));
    let mut stock = engine(owner);
    let at = |day: u32, hour: u32| {
        format!(
            "2026-{:02}-{:02}T{hour:02}:00:00Z",
            1 + day / 28,
            1 + day % 28
        )
    };
    let apply = |e: &mut Engine, id: &str, created: &str, kind: &str, data: Value| {
        let rec = json!({"id": id, "type": kind, "created": created, "data": data}).to_string();
        let mut out = Vec::new();
        e.apply(rec.as_bytes(), &mut out);
        out
    };
    let only_message = |out: &[Output]| -> (u32, String) {
        let ms: Vec<(u32, String)> = out
            .iter()
            .filter_map(|o| match o {
                Output::Message(m) => Some((m.partition, m.record.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(ms.len(), 1, "{out:?}");
        ms[0].clone()
    };
    let c = customer.as_str();
    apply(
        &mut member,
        "e1",
        &at(0, 9),
        "loyalty.account.enroll",
        json!({"customer": c, "program": "prog_x"}),
    );
    apply(
        &mut member,
        "a1",
        &at(0, 10),
        "loyalty.points.adjust",
        json!({"customer": c, "program": "prog_x", "points": 150, "reason": "opening"}),
    );
    let out = apply(
        &mut member,
        "r1",
        &at(1, 9),
        "loyalty.redemption.create",
        json!({"customer": c, "program": "prog_x", "reward": "rwd_mug"}),
    );
    let (to, request) = only_message(&out);
    assert_eq!(to, owner);
    assert!(
        out.iter().all(|o| matches!(o, Output::Message(_))),
        "nothing but the request: {out:?}"
    );
    assert_eq!(
        member
            .state()
            .held(&loyalty_core::ids::account_id("prog_x", c)),
        100
    );

    // 50 of the 150 are spendable while 100 are held.
    let out = apply(
        &mut member,
        "a2",
        &at(1, 10),
        "loyalty.points.adjust",
        json!({"customer": c, "program": "prog_x", "points": -60, "reason": "fix"}),
    );
    assert!(
        matches!(&out[..], [Output::Rejected(r)] if r.reason.as_str() == "insufficient_points"),
        "{out:?}"
    );

    // The owner grants; meanwhile the member's points expire.
    let mut out = Vec::new();
    stock.apply(request.as_bytes(), &mut out);
    let (back, granted) = only_message(&out);
    assert!(granted.contains(partition::STOCK_GRANTED));
    assert_eq!(back, partition::of(c.as_bytes(), PARTITIONS));
    assert_eq!(stock.state().stock_used.values().sum::<i64>(), 1);
    let out = apply(&mut member, "t1", &at(40, 0), "clock.tick", json!({}));
    assert!(
        out.iter()
            .any(|o| o.to_json_line().contains(r#""type":"expiry""#)),
        "{out:?}"
    );

    let mut out = Vec::new();
    member.apply(granted.as_bytes(), &mut out);
    let (to, release) = only_message(&out);
    assert_eq!(to, owner);
    assert!(release.contains(partition::STOCK_RELEASE));
    let refused: Vec<String> = out
        .iter()
        .map(Output::to_json_line)
        .filter(|l| l.contains("redemption.rejected"))
        .collect();
    assert_eq!(refused.len(), 1, "{out:?}");
    assert!(
        refused[0].contains(r#""reason":"insufficient_points""#)
            && refused[0].contains(r#""source":"r1""#)
    );
    assert!(
        !out.iter().any(|o| matches!(o, Output::Transaction(_))),
        "no points moved: {out:?}"
    );
    assert!(member.state().holds.is_empty());

    // The unit is the owner's to grant again.
    let mut out = Vec::new();
    stock.apply(release.as_bytes(), &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(stock.state().stock_used.values().sum::<i64>(), 0);
}

/// A log of one partition is folded as one engine folds it: the same bytes for the mixed
/// golden log and the example log, and no message.
#[test]
fn one_partition_of_one_is_the_engine_of_every_partition() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("examples/programs.json")).expect("config");
    let config = parse_config(&text).expect("the example config validates");
    for log in ["tests/golden/mixed.jsonl", "examples/events.jsonl"] {
        let records = std::fs::read_to_string(root.join(log)).expect("the log");
        let fold = |partitioning: Option<Partitioning>| -> Vec<String> {
            let mut e = Engine::new(&config);
            e.set_partitioning(partitioning);
            let mut out = Vec::new();
            for line in records.lines() {
                e.apply(line.as_bytes(), &mut out);
            }
            out.iter().map(Output::to_json_line).collect()
        };
        let alone = fold(None);
        assert!(alone.len() > 20, "{log}: {} lines", alone.len());
        assert_eq!(fold(Some(Partitioning { me: 0, count: 1 })), alone, "{log}");
        assert!(!alone.iter().any(|l| l.starts_with(r#"{"kind":"message""#)));
    }
}

/// Each partition keeps its own seen ids, so one record id can be applied on two partitions
/// (two customers' records): their messages still differ (the sending partition is in the
/// id) and both arrive. A record on the wrong partition, or an upstream record with a
/// message's id, is refused rather than applied where it does not belong.
#[test]
fn messages_of_two_partitions_never_share_an_id() {
    let config = parse_config(CONFIG).expect("the config validates");
    let mut engines: Vec<Engine> = (0..PARTITIONS)
        .map(|me| {
            let mut e = Engine::new(&config);
            e.set_partitioning(Some(Partitioning {
                me,
                count: PARTITIONS,
            }));
            e
        })
        .collect();
    let home = |c: &str| partition::of(c.as_bytes(), PARTITIONS) as usize;
    // Two senders on two partitions, one receiver on a third.
    let names: Vec<String> = (0..50).map(|i| format!("cus_{i}")).collect();
    let a = names
        .iter()
        .find(|c| home(c) == 0)
        .expect("a customer of 0");
    let b = names
        .iter()
        .find(|c| home(c) == 1)
        .expect("a customer of 1");
    let to = names
        .iter()
        .find(|c| home(c) == 2)
        .expect("a customer of 2");
    let apply = |e: &mut Engine, rec: String| {
        let mut out = Vec::new();
        e.apply(rec.as_bytes(), &mut out);
        out
    };
    for (n, c) in [a, b, to].into_iter().enumerate() {
        let e = &mut engines[home(c)];
        apply(
            e,
            record(
                2 * n,
                "loyalty.account.enroll",
                json!({"customer": c, "program": PROGRAM}),
            ),
        );
        apply(
            e,
            record(
                2 * n + 1,
                "loyalty.points.adjust",
                json!({"customer": c, "program": PROGRAM, "points": 100, "reason": "x"}),
            ),
        );
    }
    let mut credits = Vec::new();
    for from in [a, b] {
        let same_id = json!({"id": "dup_1", "type": "loyalty.points.transfer",
            "created": "2026-01-02T00:00:00Z",
            "data": {"program": PROGRAM, "from": from, "to": to, "points": 10}});
        let out = apply(&mut engines[home(from)], same_id.to_string());
        for o in out {
            if let Output::Message(m) = o {
                assert_eq!(m.partition as usize, home(to));
                credits.push(m.record);
            }
        }
    }
    assert_eq!(credits.len(), 2);
    assert_ne!(credits[0], credits[1]);
    let mut ins = 0;
    for c in &credits {
        ins += apply(&mut engines[home(to)], c.clone())
            .iter()
            .filter(|o| o.to_json_line().contains(r#""type":"transfer_in""#))
            .count();
    }
    assert_eq!(ins, 2, "both credits arrive");

    // A record of a customer of another partition, and a message's id from upstream.
    let wrong = record(
        90,
        "loyalty.points.adjust",
        json!({"customer": a, "program": PROGRAM, "points": 5, "reason": "x"}),
    );
    let out = apply(&mut engines[home(b)], wrong);
    assert!(
        out[0].to_json_line().contains("belongs to log partition"),
        "{out:?}"
    );
    let forged = json!({"id": "msg_0123", "type": "loyalty.points.adjust",
        "created": "2026-01-02T00:00:00Z",
        "data": {"customer": b, "program": PROGRAM, "points": 5, "reason": "x"}});
    let out = apply(&mut engines[home(b)], forged.to_string());
    assert!(
        out[0].to_json_line().contains("ids starting msg_"),
        "{out:?}"
    );
}

/// Golden: the ledgers three partitions commit for two seeds' traffic and deliveries, every
/// `message` line (a transfer's credit, a referral's claim and conversion, a stocked
/// reward's grant, each handed to another partition) and every line the messages make
/// where they land, compared byte for byte with `tests/golden/partitions.txt` (each line
/// prefixed with its seed and partition). The tests above check what the messages do;
/// this one checks that no byte of them moves (`GOLDEN_BLESS=1` rewrites the file).
#[test]
fn the_partitions_ledgers_and_messages_are_the_golden_bytes() {
    let config = parse_config(CONFIG).expect("the config validates");
    let mut got = String::new();
    let mut messages = 0;
    for seed in [3u64, 11] {
        let input = input(&mut Rng(seed ^ 0x5eed));
        let parts = run(seed, &config, &input);
        for (p, part) in parts.iter().enumerate() {
            for line in &part.ledger {
                messages += usize::from(line.starts_with(r#"{"kind":"message""#));
                got.push_str(&format!("{seed} {p} {line}\n"));
            }
        }
    }
    assert!(
        messages > 20,
        "only {messages} messages: the traffic crosses too little"
    );
    let mut problems = Vec::new();
    crate::golden::check(
        &crate::golden::root().join("tests/golden/partitions.txt"),
        &got,
        &mut problems,
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
