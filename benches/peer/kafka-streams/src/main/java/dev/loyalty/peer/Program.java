package dev.loyalty.peer;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.LinkedHashSet;
import java.util.Set;

/**
 * The subset of the engine's program config (SPEC section 3) the peer folds: one program,
 * auto-enrolling, in UTC, with floor rounding, and exactly one earning rule
 * {@code per_amount} on {@code payment.completed}, with an optional rule multiplier, an
 * optional cap (window {@code month}, or none: lifetime) and an optional
 * {@code conditions.currencies}. Anything else is refused with a message naming the field.
 */
public final class Program {
    /** The window of a cap: none (no cap), the calendar month in UTC, or the lifetime. */
    public enum Window { NONE, MONTH, LIFETIME }

    public final String id;
    public final String ruleId;
    /** points per amount = num / den, exactly (award.points x multiplier / award.per). */
    public final BigInteger num;
    public final BigInteger den;
    /** Fast path: num and den as longs (both always fit for any sane config). */
    private final long numL;
    private final long denL;
    private final boolean fitsLong;
    /** The cap in points (-1: none). */
    public final long cap;
    public final Window window;
    /** The currencies the rule earns on (null: all). */
    public final Set<String> currencies;

    private Program(String id, String ruleId, BigDecimal per, BigDecimal points, BigDecimal multiplier,
                    long cap, Window window, Set<String> currencies) {
        this.id = id;
        this.ruleId = ruleId;
        // points * multiplier / per with every factor an exact decimal u * 10^-s.
        BigDecimal pm = points.multiply(multiplier);
        BigInteger n = pm.unscaledValue();
        BigInteger d = per.unscaledValue();
        int scale = pm.scale() - per.scale(); // n/d * 10^-scale
        if (scale > 0) {
            d = d.multiply(BigInteger.TEN.pow(scale));
        } else if (scale < 0) {
            n = n.multiply(BigInteger.TEN.pow(-scale));
        }
        BigInteger g = n.gcd(d);
        if (g.signum() != 0 && !g.equals(BigInteger.ONE)) {
            n = n.divide(g);
            d = d.divide(g);
        }
        this.num = n;
        this.den = d;
        this.fitsLong = n.bitLength() < 63 && d.bitLength() < 63;
        this.numL = fitsLong ? n.longValue() : 0;
        this.denL = fitsLong ? d.longValue() : 1;
        this.cap = cap;
        this.window = window;
        this.currencies = currencies;
    }

    /** floor(amount * num / den), for 0 <= amount <= 10^15, saturating at Long.MAX_VALUE. */
    public long basePoints(long amount) {
        if (fitsLong) {
            long hi = Math.multiplyHigh(amount, numL);
            long lo = amount * numL;
            if (hi == 0 && lo >= 0) {
                return lo / denL;
            }
        }
        BigInteger p = BigInteger.valueOf(amount).multiply(num).divide(den);
        return p.bitLength() < 63 ? p.longValue() : Long.MAX_VALUE;
    }

    public boolean earnsIn(String currency) {
        return currencies == null || currencies.contains(currency);
    }

    /** Thrown for a config outside the subset or one that does not validate. */
    public static final class ConfigException extends Exception {
        ConfigException(String field, String message) {
            super(field + ": " + message);
        }
    }

    public static Program load(Path path) throws IOException, ConfigException {
        ObjectMapper m = new ObjectMapper()
            .enable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS)
            .enable(DeserializationFeature.USE_BIG_INTEGER_FOR_INTS)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
        JsonNode root = m.readTree(Files.readAllBytes(path));
        return parse(root);
    }

    static Program parse(JsonNode root) throws ConfigException {
        if (root == null || !root.isObject()) {
            throw new ConfigException("(config)", "not a JSON object");
        }
        only(root, "", "programs");
        JsonNode programs = root.get("programs");
        if (programs == null || !programs.isArray()) {
            throw new ConfigException("programs", "missing, or not an array");
        }
        if (programs.size() != 1) {
            throw new ConfigException("programs", "the peer folds exactly one program, got " + programs.size());
        }
        JsonNode p = programs.get(0);
        String at = "programs[0]";
        if (!p.isObject()) {
            throw new ConfigException(at, "not an object");
        }
        only(p, at, "id", "name", "currency", "points", "timezone", "autoEnroll", "minimumRedemption",
            "earningRules", "tierConfig", "campaigns", "rewards", "stampCards");
        String id = string(p, at, "id", true);
        string(p, at, "name", false);
        currency(string(p, at, "currency", true), at + ".currency");
        JsonNode points = p.get("points");
        if (points != null && !points.isNull()) {
            String pat = at + ".points";
            if (!points.isObject()) {
                throw new ConfigException(pat, "not an object");
            }
            only(points, pat, "name", "symbol", "rounding");
            string(points, pat, "name", false);
            string(points, pat, "symbol", false);
            String rounding = string(points, pat, "rounding", false);
            if (rounding != null && !rounding.equals("floor")) {
                throw new ConfigException(pat + ".rounding", "the peer supports only \"floor\", got \"" + rounding + "\"");
            }
        }
        String tz = string(p, at, "timezone", false);
        if (tz != null && !tz.equals("UTC")) {
            throw new ConfigException(at + ".timezone", "the peer supports only \"UTC\", got \"" + tz + "\"");
        }
        JsonNode auto = p.get("autoEnroll");
        if (auto == null || !auto.isBoolean() || !auto.booleanValue()) {
            throw new ConfigException(at + ".autoEnroll", "the peer needs autoEnroll: true (it takes no enrolment commands)");
        }
        JsonNode minRed = p.get("minimumRedemption");
        if (minRed != null && !minRed.isNull()) {
            nonNegative(minRed, at + ".minimumRedemption");
        }
        for (String empty : new String[] {"campaigns", "rewards", "stampCards"}) {
            JsonNode n = p.get(empty);
            if (n != null && !n.isNull() && !(n.isArray() && n.isEmpty())) {
                throw new ConfigException(at + "." + empty, "not supported by the peer (only absent or [])");
            }
        }
        JsonNode tiers = p.get("tierConfig");
        if (tiers != null && !tiers.isNull()) {
            throw new ConfigException(at + ".tierConfig", "not supported by the peer");
        }
        JsonNode rules = p.get("earningRules");
        if (rules == null || !rules.isArray() || rules.size() != 1) {
            throw new ConfigException(at + ".earningRules", "the peer folds exactly one earning rule");
        }
        JsonNode r = rules.get(0);
        String rat = at + ".earningRules[0]";
        if (!r.isObject()) {
            throw new ConfigException(rat, "not an object");
        }
        only(r, rat, "id", "trigger", "award", "multiplier", "cap", "window", "conditions");
        String ruleId = string(r, rat, "id", true);
        String trigger = string(r, rat, "trigger", true);
        if (!trigger.equals("payment.completed")) {
            throw new ConfigException(rat + ".trigger", "the peer supports only \"payment.completed\", got \"" + trigger + "\"");
        }
        JsonNode award = r.get("award");
        String aat = rat + ".award";
        if (award == null || !award.isObject()) {
            throw new ConfigException(aat, "missing, or not an object");
        }
        only(award, aat, "type", "per", "points");
        String type = string(award, aat, "type", true);
        if (!type.equals("per_amount")) {
            throw new ConfigException(aat + ".type", "the peer supports only \"per_amount\", got \"" + type + "\"");
        }
        BigDecimal per = number(award, aat, "per", true);
        if (per.signum() <= 0) {
            throw new ConfigException(aat + ".per", "must be above 0");
        }
        BigDecimal pts = number(award, aat, "points", true);
        if (pts.signum() < 0) {
            throw new ConfigException(aat + ".points", "must not be negative");
        }
        BigDecimal mult = BigDecimal.ONE;
        if (r.has("multiplier") && !r.get("multiplier").isNull()) {
            mult = number(r, rat, "multiplier", true);
            if (mult.signum() <= 0) {
                throw new ConfigException(rat + ".multiplier", "must be above 0");
            }
        }
        long cap = -1;
        JsonNode capNode = r.get("cap");
        if (capNode != null && !capNode.isNull()) {
            String cat = rat + ".cap";
            if (!capNode.isObject()) {
                throw new ConfigException(cat, "not an object");
            }
            only(capNode, cat, "points");
            BigDecimal c = number(capNode, cat, "points", true);
            if (c.signum() < 0 || c.stripTrailingZeros().scale() > 0 || c.compareTo(BigDecimal.valueOf(1_000_000_000_000_000L)) > 0) {
                throw new ConfigException(cat + ".points", "must be a whole number from 0 to 10^15");
            }
            cap = c.longValueExact();
        }
        String w = string(r, rat, "window", false);
        Window window;
        if (w == null) {
            window = cap < 0 ? Window.NONE : Window.LIFETIME;
        } else if (cap < 0) {
            throw new ConfigException(rat + ".window", "a window needs a cap");
        } else if (w.equals("month")) {
            window = Window.MONTH;
        } else if (w.equals("lifetime")) {
            window = Window.LIFETIME;
        } else {
            throw new ConfigException(rat + ".window", "the peer supports only \"month\" and \"lifetime\", got \"" + w + "\"");
        }
        Set<String> currencies = null;
        JsonNode cond = r.get("conditions");
        if (cond != null && !cond.isNull()) {
            String cat = rat + ".conditions";
            if (!cond.isObject()) {
                throw new ConfigException(cat, "not an object");
            }
            only(cond, cat, "currencies");
            JsonNode cs = cond.get("currencies");
            if (cs != null && !cs.isNull()) {
                if (!cs.isArray()) {
                    throw new ConfigException(cat + ".currencies", "not an array");
                }
                currencies = new LinkedHashSet<>();
                for (int i = 0; i < cs.size(); i++) {
                    JsonNode c = cs.get(i);
                    if (!c.isTextual()) {
                        throw new ConfigException(cat + ".currencies[" + i + "]", "not a string");
                    }
                    currency(c.textValue(), cat + ".currencies[" + i + "]");
                    currencies.add(c.textValue());
                }
            }
        }
        return new Program(id, ruleId, per, pts, mult, cap, window, currencies);
    }

    private static void only(JsonNode o, String at, String... allowed) throws ConfigException {
        Iterator<String> names = o.fieldNames();
        outer:
        while (names.hasNext()) {
            String n = names.next();
            for (String a : allowed) {
                if (a.equals(n)) {
                    continue outer;
                }
            }
            throw new ConfigException(at.isEmpty() ? n : at + "." + n, "unknown field, or not supported by the peer");
        }
    }

    private static String string(JsonNode o, String at, String field, boolean required) throws ConfigException {
        JsonNode n = o.get(field);
        if (n == null || n.isNull()) {
            if (required) {
                throw new ConfigException(at + "." + field, "missing");
            }
            return null;
        }
        if (!n.isTextual()) {
            throw new ConfigException(at + "." + field, "not a string");
        }
        if (required && n.textValue().isEmpty()) {
            throw new ConfigException(at + "." + field, "empty");
        }
        return n.textValue();
    }

    private static BigDecimal number(JsonNode o, String at, String field, boolean required) throws ConfigException {
        JsonNode n = o.get(field);
        if (n == null || n.isNull()) {
            throw new ConfigException(at + "." + field, "missing");
        }
        if (!n.isNumber()) {
            throw new ConfigException(at + "." + field, "not a number");
        }
        return n.decimalValue();
    }

    private static void nonNegative(JsonNode n, String at) throws ConfigException {
        if (!n.isNumber() || n.decimalValue().signum() < 0) {
            throw new ConfigException(at, "must be a number, not negative");
        }
    }

    private static void currency(String c, String at) throws ConfigException {
        if (c.length() != 3 || !c.chars().allMatch(Character::isLetter)) {
            throw new ConfigException(at, "not a three-letter currency: \"" + c + "\"");
        }
    }
}
