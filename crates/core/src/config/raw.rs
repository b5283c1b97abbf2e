//! The config file as it is written: structs that mirror the JSON exactly
//! (`deny_unknown_fields`, field names as in the seed API, `null` read as absent), and
//! numbers read from their JSON text as exact decimals.
//!
//! Owns: the file's shape. Must not: validate a value (`validate`) or default one.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::dec::Dec;

/// A JSON number read exactly from its text.
#[derive(Clone, Copy, Debug)]
pub(super) struct Num(pub(super) Dec);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Num, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        let text = raw.get();
        text.parse::<Dec>().map(Num).map_err(|e| match e {
            crate::dec::DecError::Syntax => D::Error::custom(format!(
                "invalid type: {}, expected a number",
                json_kind(text)
            )),
            crate::dec::DecError::Range => D::Error::custom(e.to_string()),
        })
    }
}

pub(super) fn json_kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't') | Some(b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a value",
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) programs: Vec<RawProgram>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawProgram {
    pub(super) id: String,
    pub(super) name: Option<String>,
    pub(super) currency: String,
    pub(super) points: Option<RawPoints>,
    pub(super) timezone: Option<String>,
    pub(super) auto_enroll: Option<bool>,
    pub(super) minimum_redemption: Option<Num>,
    pub(super) refund_debt: Option<String>,
    pub(super) pending_days: Option<Num>,
    pub(super) points_expiry: Option<RawExpiry>,
    pub(super) earning_rules: Option<Vec<RawRule>>,
    pub(super) tier_config: Option<RawTierConfig>,
    pub(super) campaigns: Option<Vec<RawCampaign>>,
    pub(super) rewards: Option<Vec<RawReward>>,
    pub(super) stamp_cards: Option<Vec<RawStampCard>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPoints {
    pub(super) name: Option<String>,
    pub(super) symbol: Option<String>,
    pub(super) rounding: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawExpiry {
    pub(super) months: Num,
    pub(super) warn_days: Option<Num>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) id: String,
    pub(super) trigger: String,
    pub(super) award: RawAward,
    pub(super) multiplier: Option<Num>,
    pub(super) cap: Option<RawCap>,
    pub(super) window: Option<String>,
    pub(super) conditions: Option<RawConditions>,
    pub(super) recipient: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAward {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) per: Option<Num>,
    pub(super) points: Option<Num>,
    pub(super) rates: Option<BTreeMap<String, Num>>,
    pub(super) percent: Option<Num>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCap {
    pub(super) points: Num,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawConditions {
    pub(super) min_amount: Option<Num>,
    pub(super) max_amount: Option<Num>,
    pub(super) currencies: Option<Vec<String>>,
    pub(super) valid_from: Option<String>,
    pub(super) valid_until: Option<String>,
    pub(super) min_rank: Option<Num>,
    pub(super) max_rank: Option<Num>,
    pub(super) metadata: Option<BTreeMap<String, String>>,
    pub(super) max_uses: Option<Num>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawTierConfig {
    pub(super) qualify_on: Option<String>,
    pub(super) period: RawPeriod,
    pub(super) soft_landing: Option<bool>,
    pub(super) tiers: Vec<RawTier>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeriod {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) months: Num,
    pub(super) start: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawTier {
    pub(super) name: String,
    pub(super) rank: Num,
    pub(super) threshold: Num,
    pub(super) earn_multiplier: Option<Num>,
    pub(super) redemption_discount: Option<Num>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawCampaign {
    pub(super) id: String,
    pub(super) name: Option<String>,
    pub(super) starts: Option<String>,
    pub(super) ends: Option<String>,
    pub(super) multiplier: Option<Num>,
    pub(super) triggers: Option<Vec<String>>,
    pub(super) min_rank: Option<Num>,
    pub(super) max_rank: Option<Num>,
    pub(super) bonus: Option<RawBonus>,
    pub(super) schedule: Option<RawSchedule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    pub(super) days: Vec<String>,
    pub(super) from: Option<String>,
    pub(super) until: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBonus {
    pub(super) points: Num,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawReward {
    pub(super) id: String,
    pub(super) name: Option<String>,
    pub(super) cost: Num,
    pub(super) kind: Option<String>,
    pub(super) stock: Option<Num>,
    pub(super) min_rank: Option<Num>,
    pub(super) max_rank: Option<Num>,
    pub(super) max_per_member: Option<Num>,
    pub(super) starts: Option<String>,
    pub(super) ends: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawStampCard {
    pub(super) id: String,
    pub(super) trigger: String,
    pub(super) stamps_required: Num,
    pub(super) conditions: Option<RawConditions>,
    pub(super) reward: String,
}
