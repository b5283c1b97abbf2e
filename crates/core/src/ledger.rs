//! The ledger (SPEC sections 7 and 9): posting a transaction (its lot or its deduction,
//! the balance, the `ptx_` id) and minting the events of one record or due effect.
//!
//! Owns: `Cx` (the minting context: ids from the source and a counter, the output vector)
//! and `Engine::post`, the one place a balance moves. Must not decide whether a rule fires.

use crate::engine::Engine;
use crate::ids;
use crate::lots;
use crate::output::{Event, Member, OutEvent, Output, Status, Transaction, TxKind, TxMeta, Why};
use crate::state::{Account, AwardRecord, LotEffect};
use crate::time::Timestamp;
use crate::Sym;

/// What the engine reuses from one record to the next, to spare allocations:
/// nothing in it is state, and no output depends on it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scratch {
    /// What a transaction's chain hash covers, written here before it is hashed.
    pub(crate) line: Vec<u8>,
}

/// Minting and output for the effects of one record (or one due effect).
pub(crate) struct Cx<'o> {
    /// What ids are minted from: the record's id, or the due effect's name.
    pub(crate) mint: Sym,
    /// What the effects name as their `source`: the record's id, except for a message from
    /// another partition, whose effects name the record that caused it.
    pub(crate) source: Sym,
    /// Whether `source` is a record's id (not an effect that fell due): events carry it.
    pub(crate) from_record: bool,
    pub(crate) created: Timestamp,
    pub(crate) n_tx: u32,
    pub(crate) n_ev: u32,
    pub(crate) n_msg: u32,
    pub(crate) out: &'o mut Vec<Output>,
    /// Awards of the payment being applied, for later refunds.
    pub(crate) payment_awards: Option<Vec<AwardRecord>>,
    /// Accounts whose qualifying activity changed: their tier is checked for promotion.
    pub(crate) touched: Vec<Sym>,
}

impl<'o> Cx<'o> {
    /// The minting context of a record, or of an effect that fell due.
    pub(crate) fn new(source: Sym, created: Timestamp, out: &'o mut Vec<Output>) -> Cx<'o> {
        Cx {
            mint: source.clone(),
            source,
            from_record: true,
            created,
            n_tx: 0,
            n_ev: 0,
            n_msg: 0,
            out,
            payment_awards: None,
            touched: Vec::new(),
        }
    }

    /// The minting context of an effect that fell due: its events carry no `source`.
    pub(crate) fn due(source: Sym, created: Timestamp, out: &'o mut Vec<Output>) -> Cx<'o> {
        Cx {
            from_record: false,
            ..Cx::new(source, created, out)
        }
    }

    pub(crate) fn tx_id(&mut self) -> Sym {
        self.n_tx += 1;
        ids::transaction_sym(&self.mint, self.n_tx - 1)
    }

    pub(crate) fn event(&mut self, member: Member, event: Event) {
        self.n_ev += 1;
        let id = ids::event_id(&self.mint, self.n_ev - 1);
        self.out.push(Output::Event(OutEvent {
            id,
            created: self.created,
            source: self.from_record.then(|| self.source.clone()),
            member,
            event,
        }));
    }
}

impl Cx<'_> {
    /// Hands a record of type `kind` with `data` to the log partition of `key` (the key it
    /// is produced with, so that any tool routes it alike): its id minted like every other,
    /// from this partition and this record, its time this record's.
    pub(crate) fn message(
        &mut self,
        p: crate::partition::Partitioning,
        key: &str,
        kind: &str,
        data: &serde_json::Value,
    ) {
        self.message_at(p, key, kind, data, self.created);
    }

    /// [`Cx::message`], with the time `created` (an effect that waited keeps its own).
    pub(crate) fn message_at(
        &mut self,
        p: crate::partition::Partitioning,
        key: &str,
        kind: &str,
        data: &serde_json::Value,
        created: Timestamp,
    ) {
        self.n_msg += 1;
        let id = ids::message_id(p.me, &self.mint, self.n_msg - 1);
        let mut line = Vec::with_capacity(256);
        line.extend_from_slice(br#"{"id":"#);
        crate::output::jw::str(&mut line, &id);
        line.extend_from_slice(br#","type":"#);
        crate::output::jw::str(&mut line, kind);
        line.extend_from_slice(br#","created":"#);
        crate::output::jw::time(&mut line, created);
        line.extend_from_slice(br#","data":"#);
        line.extend_from_slice(data.to_string().as_bytes());
        line.push(b'}');
        self.out.push(Output::Message(crate::output::Message {
            partition: p.of(key),
            key: key.to_string(),
            record: String::from_utf8(line).unwrap_or_default(),
        }));
    }
}

/// The member an account's events are about.
pub(crate) fn member(a: &Account) -> Member {
    Member {
        account: a.id.clone(),
        customer: a.customer.clone(),
        program: a.program.clone(),
    }
}

impl Engine {
    /// Appends a ledger entry and moves the balance; returns its id and the balance after.
    /// In a program with pending points an award or a reversal is `posted`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn post(
        &mut self,
        cx: &mut Cx<'_>,
        account_id: &str,
        kind: TxKind,
        points: i64,
        rule: Option<Sym>,
        campaigns: Vec<Sym>,
        metadata: TxMeta,
        why: Why,
    ) -> (Sym, i128) {
        let status = self.status_of(account_id, kind, false);
        let entry = (kind, points, rule, campaigns, metadata, why);
        self.post_status(cx, account_id, entry, status)
    }

    /// The status an award or a reversal of `account_id` carries: `None` but in a program
    /// with pending points (SPEC section 13), and for other kinds of entry.
    pub(crate) fn status_of(
        &self,
        account_id: &str,
        kind: TxKind,
        pending: bool,
    ) -> Option<Status> {
        let pending_program = self
            .state
            .accounts
            .get(account_id)
            .and_then(|a| self.state.program(&a.program))
            .is_some_and(|p| p.pending_days.is_some());
        match kind {
            TxKind::Award | TxKind::Reversal if pending_program => Some(if pending {
                Status::Pending
            } else {
                Status::Posted
            }),
            _ => None,
        }
    }

    /// [`Engine::post`] with the entry's status: a `pending` one moves the pending balance
    /// (which its caller keeps), not the balance, and forms no lot.
    pub(crate) fn post_status(
        &mut self,
        cx: &mut Cx<'_>,
        account_id: &str,
        entry: (TxKind, i64, Option<Sym>, Vec<Sym>, TxMeta, Why),
        status: Option<Status>,
    ) -> (Sym, i128) {
        let (kind, points, rule, campaigns, metadata, why) = entry;
        let id = cx.tx_id();
        // Lots: credits form lots (after paying off any debt), deductions consume the lots
        // that expire first. Reversals and expiries move their lots themselves.
        let expiry = self
            .state
            .accounts
            .get(account_id)
            .and_then(|a| self.state.program(&a.program))
            .and_then(|p| p.expiry.map(|e| (e, p.tz)));
        let (expires, warn) = lots::lot_dates(expiry, cx.created);
        let mut line = std::mem::take(&mut self.scratch.line);
        let account = self
            .account_mut(account_id)
            .expect("transactions are posted to existing accounts");
        let mut new_lot = None;
        let pending = status == Some(Status::Pending);
        match kind {
            _ if pending => {}
            TxKind::Award | TxKind::Adjustment | TxKind::TransferIn | TxKind::Vest
                if points > 0 =>
            {
                new_lot = lots::credit(account, points, cx.created, expires, warn, &id);
            }
            TxKind::Adjustment | TxKind::TransferOut | TxKind::Redemption => {
                lots::debit(account, -points);
            }
            _ => {}
        }
        if !pending {
            account.balance += i128::from(points);
        }
        let balance = account.balance;
        let mut tx = Transaction {
            id: id.clone(),
            account: account.id.clone(),
            customer: account.customer.clone(),
            program: account.program.clone(),
            kind,
            points,
            status,
            balance_after: balance,
            rule,
            campaigns,
            source: cx.source.clone(),
            created: cx.created,
            metadata,
            why,
            hash: [0; 32],
            written: Default::default(),
        };
        // The account's chain: this line's hash covers the previous one's.
        tx.seal(&account.ledger_hash, &mut line);
        account.ledger_hash = tx.hash;
        self.scratch.line = line;
        cx.out.push(Output::Transaction(tx));
        if let Some(lot) = new_lot {
            for (at, kind) in [
                (lot.expires, LotEffect::Expiry),
                (lot.warn, LotEffect::Warning),
            ] {
                if let Some(at) = at {
                    self.state
                        .schedule
                        .insert_lot(at, kind, account_id, lot.seq);
                }
            }
        }
        (id, balance)
    }
}
