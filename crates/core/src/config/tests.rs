//! Tests of the config schema and its validation.

use super::*;

const SEED: &str = include_str!("../../../../deploy/programs.example.json");

#[test]
fn the_example_config_loads() {
    let c = parse_config(SEED).expect("deploy/programs.example.json validates");
    let p = &c.programs[0];
    assert_eq!(&*p.id, "prog_default");
    assert_eq!(p.rules.len(), 3);
    assert_eq!(p.tier_list()[2].earn_multiplier.to_string(), "1.5");
    assert_eq!(p.rules[0].window, Window::Month);
    assert_eq!(p.rules[2].window, Window::Lifetime);
}

fn refused(text: &str) -> ConfigError {
    parse_config(text).expect_err("must be refused")
}

fn prog(extra: &str) -> String {
    format!(r#"{{"programs":[{{"id":"prog_a","currency":"EUR"{extra}}}]}}"#)
}

#[test]
fn refusals_name_the_field() {
    let cases = [
        (prog(r#","bogus":1"#), "programs[0].bogus", "unknown field"),
        (
            prog(
                r#","earningRules":[{"id":"rule_a","trigger":"t","award":{"type":"per_amount","per":0,"points":1}}]"#,
            ),
            "programs[0].earningRules[0].award.per",
            "greater than 0",
        ),
        (
            prog(
                r#","earningRules":[{"id":"rule_a","trigger":"t","award":{"type":"fixed","points":1},"window":"month"}]"#,
            ),
            "programs[0].earningRules[0].window",
            "needs a cap",
        ),
        (
            prog(
                r#","earningRules":[{"id":"rule_a","trigger":"t","award":{"type":"fixed","points":-1}}]"#,
            ),
            "programs[0].earningRules[0].award.points",
            "negative",
        ),
        (
            prog(
                r#","earningRules":[{"id":"r","trigger":"t","award":{"type":"fixed","points":1}},{"id":"r","trigger":"t","award":{"type":"fixed","points":1}}]"#,
            ),
            "programs[0].earningRules[1].id",
            "duplicate",
        ),
        (
            prog(
                r#","tierConfig":{"period":{"type":"rolling","months":12},"tiers":[{"name":"A","rank":1,"threshold":0},{"name":"B","rank":0,"threshold":5}]}"#,
            ),
            "programs[0].tierConfig.tiers[1].rank",
            "increasing",
        ),
        (
            prog(
                r#","tierConfig":{"period":{"type":"rolling","months":12},"tiers":[{"name":"A","rank":1,"threshold":0},{"name":"B","rank":1,"threshold":5}]}"#,
            ),
            "programs[0].tierConfig.tiers[1].rank",
            "duplicate",
        ),
        (
            prog(
                r#","stampCards":[{"id":"card_a","trigger":"t","stampsRequired":3,"reward":"rwd_missing"}]"#,
            ),
            "programs[0].stampCards[0].reward",
            "not defined",
        ),
        (
            prog(r#","timezone":"Mars/Olympus""#),
            "programs[0].timezone",
            "unknown time zone",
        ),
        (
            prog(r#","minimumRedemption":"100""#),
            "programs[0].minimumRedemption",
            "expected a number",
        ),
        (
            prog(r#","minimumRedemption":1.5"#),
            "programs[0].minimumRedemption",
            "whole number",
        ),
        (
            r#"{"programs":[{"id":"p","currency":"EUR"},{"id":"p","currency":"EUR"}]}"#.to_string(),
            "programs[1].id",
            "duplicate",
        ),
        (
            r#"{"programs":[{"currency":"EUR"}]}"#.to_string(),
            "programs[0]",
            "missing field `id`",
        ),
        (
            r#"{"programs":[{"id":"p","currency":"EURO"}]}"#.to_string(),
            "programs[0].currency",
            "three letters",
        ),
        (
            r#"{"programs":[{"id":"p","currency":"E1R"}]}"#.to_string(),
            "programs[0].currency",
            "three letters",
        ),
        (
            prog(
                r#","earningRules":[{"id":"rule_a","trigger":"t","award":{"type":"fixed","points":1},"conditions":{"currencies":["EUR","euros"]}}]"#,
            ),
            "programs[0].earningRules[0].conditions.currencies[1]",
            "three letters",
        ),
        (
            prog(
                r#","earningRules":[{"id":"rule_a","trigger":"t","award":{"type":"per_currency","per":100,"rates":{"EUR":1,"POUND":2}}}]"#,
            ),
            "programs[0].earningRules[0].award.rates.POUND",
            "three letters",
        ),
        (
            prog(
                r#","earningRules":[{"id":"rule_a","trigger":"t","award":{"type":"fixed","points":1},"multiplier":0}]"#,
            ),
            "programs[0].earningRules[0].multiplier",
            "greater than 0",
        ),
        (
            prog(r#","campaigns":[{"id":"camp_a","multiplier":0.0}]"#),
            "programs[0].campaigns[0].multiplier",
            "greater than 0",
        ),
        (
            prog(
                r#","tierConfig":{"period":{"type":"rolling","months":12},"tiers":[{"name":"A","rank":0,"threshold":0,"earnMultiplier":0}]}"#,
            ),
            "programs[0].tierConfig.tiers[0].earnMultiplier",
            "greater than 0",
        ),
        (
            prog(
                r#","tierConfig":{"period":{"type":"rolling","months":12},"tiers":[{"name":"A","rank":0,"threshold":100},{"name":"B","rank":1,"threshold":500}]}"#,
            ),
            "programs[0].tierConfig.tiers[0].threshold",
            "threshold 0",
        ),
    ];
    for (text, path, words) in cases {
        let e = refused(&text);
        assert_eq!(e.path, path, "{text}: {e}");
        assert!(e.message.contains(words), "{text}: {e}");
    }
}

#[test]
fn defaults_apply() {
    let c = parse_config(&prog(
        r#","earningRules":[{"id":"rule_a","trigger":"t","award":{"type":"fixed","points":5},"cap":{"points":10}}]"#,
    ))
    .unwrap();
    let p = &c.programs[0];
    assert_eq!(p.rounding, Rounding::Floor);
    assert_eq!(p.timezone, "UTC");
    assert!(!p.auto_enroll);
    assert_eq!(p.rules[0].multiplier, Dec::ONE);
    assert_eq!(p.rules[0].window, Window::Lifetime);
    assert_eq!(p.rules[0].recipient, Recipient::Referrer);
}

#[test]
fn nulls_read_as_absent() {
    let c = parse_config(&prog(
        r#","earningRules":[{"id":"rule_a","trigger":"t","award":{"type":"fixed","points":5},"conditions":{"validFrom":null,"maxUses":null}}],"campaigns":[{"id":"camp_a","bonus":null}]"#,
    ))
    .unwrap();
    assert_eq!(c.programs[0].campaigns[0].bonus, None);
}

/// A file that is no JSON says where (a stray comma, a missing brace); a file that is JSON
/// but not a valid config names the field, with no position.
#[test]
fn a_syntax_error_says_where() {
    let doubled = "{\"programs\": [\n  {\"id\": \"p\",, \"currency\": \"EUR\"}]}";
    let e = parse_config(doubled).expect_err("no JSON");
    assert!(e.to_string().ends_with("(line 2, column 14)"), "{e}");
    let cut = "{\"programs\": [\n  {\"id\": \"p\"";
    let e = parse_config(cut).expect_err("no JSON");
    assert!(e.to_string().contains("(line 2, column"), "{e}");
    let trailing = "{\"programs\": []} x";
    let e = parse_config(trailing).expect_err("trailing text");
    assert!(e.to_string().contains("(line 1, column"), "{e}");
    let wrong = "{\"programs\": [{\"id\": \"p\", \"currency\": 5}]}";
    let e = parse_config(wrong).expect_err("a number for a string");
    assert!(e.to_string().contains("programs[0].currency"), "{e}");
    assert!(!e.to_string().contains("line"), "{e}");
}
