package dev.loyalty.peer;

import com.fasterxml.jackson.core.io.JsonStringEncoder;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeParseException;
import java.util.Objects;
import java.util.regex.Pattern;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * The fold of one {@code payment.completed} record (SPEC sections 2 and 4, for the subset
 * {@link Program} accepts): bad input is rejected and leaves no trace; a duplicate id is
 * rejected; anything else is "seen", and earns floor(amount x points x multiplier / per),
 * truncated to what is left of the cap in the event's window (calendar month in UTC by
 * {@code created}, or lifetime). An award of 0 writes nothing. Each award is forwarded as
 * one "earned" record keyed by the customer.
 *
 * <p>Stores (RocksDB, changelogged, committed with the output under exactly_once_v2):
 * {@code accounts}: customer -> balance and the points the rule awarded per window;
 * {@code seen}: customer NUL event id -> 1.
 */
public final class EarnProcessor implements Processor<String, byte[], String, String> {
    public static final String ACCOUNTS = "accounts";
    public static final String SEEN = "seen";
    static final long MAX_AMOUNT = 1_000_000_000_000_000L;
    private static final byte[] ONE = {1};
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final JsonStringEncoder ESC = JsonStringEncoder.getInstance();

    private final Program program;
    private ProcessorContext<String, String> ctx;
    private KeyValueStore<String, byte[]> accounts;
    private KeyValueStore<String, byte[]> seen;

    public EarnProcessor(Program program) {
        this.program = program;
    }

    @Override
    public void init(ProcessorContext<String, String> context) {
        this.ctx = context;
        this.accounts = context.getStateStore(ACCOUNTS);
        this.seen = context.getStateStore(SEEN);
    }

    @Override
    public void process(Record<String, byte[]> record) {
        Stats.PROCESSED.increment();
        // Parse and validate: malformed / invalid leave no trace.
        JsonNode env;
        try {
            env = record.value() == null ? null : JSON.readTree(record.value());
        } catch (Exception e) {
            env = null;
        }
        if (env == null || !env.isObject()) {
            Stats.reject("malformed", "not a JSON object", null);
            return;
        }
        JsonNode idN = env.get("id");
        JsonNode typeN = env.get("type");
        JsonNode createdN = env.get("created");
        JsonNode data = env.get("data");
        if (idN == null || !idN.isTextual() || typeN == null || !typeN.isTextual()
            || createdN == null || !createdN.isTextual() || data == null || !data.isObject()) {
            Stats.reject("malformed", "id, type, created or data missing or mistyped", idN);
            return;
        }
        String id = idN.textValue();
        if (!typeN.textValue().equals("payment.completed")) {
            Stats.IGNORED.increment();
            return;
        }
        OffsetDateTime created = parseRfc3339(createdN.textValue());
        if (created == null) {
            Stats.reject("invalid", "created is not an RFC 3339 time", idN);
            return;
        }
        JsonNode pay = data.get("id");
        JsonNode cus = data.get("customer");
        JsonNode amt = data.get("amount");
        JsonNode cur = data.get("currency");
        JsonNode meta = data.get("metadata");
        if (pay == null || !pay.isTextual()) {
            Stats.reject("invalid", "data.id missing or not a string", idN);
            return;
        }
        if (cus == null || !cus.isTextual() || cus.textValue().isEmpty()) {
            Stats.reject("invalid", "data.customer missing or not a string", idN);
            return;
        }
        if (amt == null || !amt.isIntegralNumber() || !amt.canConvertToLong()
            || amt.longValue() < 0 || amt.longValue() > MAX_AMOUNT) {
            Stats.reject("invalid", "data.amount missing, not an integer or out of range", idN);
            return;
        }
        if (cur == null || !cur.isTextual()) {
            Stats.reject("invalid", "data.currency missing or not a string", idN);
            return;
        }
        if (meta != null && !meta.isNull()) {
            if (!meta.isObject()) {
                Stats.reject("invalid", "data.metadata not an object", idN);
                return;
            }
            if (meta.has("loyalty_account")) {
                Stats.reject("unsupported", "metadata.loyalty_account (the peer links by customer only)", idN);
                return;
            }
        }
        String customer = cus.textValue();
        if (!Objects.equals(record.key(), customer)) {
            Stats.keyMismatch(record.key(), customer);
        }
        // Duplicates: the id is seen from here on, whatever it earns.
        String seenKey = customer + '\u0000' + id;
        if (seen.get(seenKey) != null) {
            Stats.reject("duplicate", "id already seen", idN);
            return;
        }
        seen.put(seenKey, ONE);
        if (!program.earnsIn(cur.textValue())) {
            return;
        }
        long points = program.basePoints(amt.longValue());
        if (points <= 0) {
            return;
        }
        Account a = Account.decode(accounts.get(customer));
        boolean capped = false;
        if (program.window != Program.Window.NONE) {
            int period = program.window == Program.Window.MONTH ? monthOf(created) : Integer.MIN_VALUE;
            long used = a.used(period);
            long headroom = program.cap - used;
            if (headroom <= 0) {
                Stats.CAPPED_OUT.increment();
                return;
            }
            if (points > headroom) {
                points = headroom;
                capped = true;
            }
            a.setUsed(period, used + points);
        }
        a.balance = Math.addExact(a.balance, points);
        accounts.put(customer, a.encode());
        Stats.AWARDS.increment();
        StringBuilder sb = new StringBuilder(128);
        sb.append("{\"event\":\"").append(ESC.quoteAsString(id))
            .append("\",\"customer\":\"").append(ESC.quoteAsString(customer))
            .append("\",\"points\":").append(points)
            .append(",\"balance\":").append(a.balance)
            .append(",\"capped\":").append(capped)
            .append('}');
        ctx.forward(new Record<>(customer, sb.toString(), record.timestamp()));
        Stats.firstOutput();
    }

    private static final Pattern RFC3339 = Pattern.compile(
        "\\d{4}-\\d{2}-\\d{2}[Tt ]\\d{2}:\\d{2}:\\d{2}(\\.\\d+)?([Zz]|[+-]\\d{2}:\\d{2})");

    /** An RFC 3339 time (as the engine reads it: seconds required, years 1 to 9998 in UTC), or null. */
    static OffsetDateTime parseRfc3339(String text) {
        if (!RFC3339.matcher(text).matches()) {
            return null;
        }
        try {
            OffsetDateTime t = OffsetDateTime.parse(text.replace('t', 'T').replace(' ', 'T').replace('z', 'Z'));
            int year = t.withOffsetSameInstant(ZoneOffset.UTC).getYear();
            return year >= 1 && year <= 9998 ? t : null;
        } catch (DateTimeParseException e) {
            return null;
        }
    }

    /** The calendar month (UTC) of a time, as year * 12 + month - 1. */
    static int monthOf(OffsetDateTime t) {
        OffsetDateTime u = t.withOffsetSameInstant(ZoneOffset.UTC);
        return u.getYear() * 12 + u.getMonthValue() - 1;
    }

    /** A customer's balance and the points the rule awarded per window (few: one a month). */
    static final class Account {
        long balance;
        int[] periods = new int[0];
        long[] used = new long[0];

        long used(int period) {
            for (int i = 0; i < periods.length; i++) {
                if (periods[i] == period) {
                    return used[i];
                }
            }
            return 0;
        }

        void setUsed(int period, long v) {
            for (int i = 0; i < periods.length; i++) {
                if (periods[i] == period) {
                    used[i] = v;
                    return;
                }
            }
            int n = periods.length;
            periods = java.util.Arrays.copyOf(periods, n + 1);
            used = java.util.Arrays.copyOf(used, n + 1);
            periods[n] = period;
            used[n] = v;
        }

        byte[] encode() {
            ByteBuffer b = ByteBuffer.allocate(12 + 12 * periods.length);
            b.putLong(balance).putInt(periods.length);
            for (int i = 0; i < periods.length; i++) {
                b.putInt(periods[i]).putLong(used[i]);
            }
            return b.array();
        }

        static Account decode(byte[] bytes) {
            Account a = new Account();
            if (bytes == null) {
                return a;
            }
            ByteBuffer b = ByteBuffer.wrap(bytes);
            a.balance = b.getLong();
            int n = b.getInt();
            a.periods = new int[n];
            a.used = new long[n];
            for (int i = 0; i < n; i++) {
                a.periods[i] = b.getInt();
                a.used[i] = b.getLong();
            }
            return a;
        }
    }
}
