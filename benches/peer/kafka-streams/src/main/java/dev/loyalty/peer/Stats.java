package dev.loyalty.peer;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;

/** Counters of the whole process (all stream threads), reported on stderr. */
final class Stats {
    static final LongAdder PROCESSED = new LongAdder();
    static final LongAdder AWARDS = new LongAdder();
    static final LongAdder REJECTED = new LongAdder();
    static final LongAdder DUPLICATES = new LongAdder();
    static final LongAdder IGNORED = new LongAdder();
    static final LongAdder CAPPED_OUT = new LongAdder();
    static final long START = System.nanoTime();
    private static final AtomicLong LOGGED = new AtomicLong();
    private static final AtomicBoolean FIRST = new AtomicBoolean();
    private static final AtomicBoolean MISMATCH = new AtomicBoolean();

    private Stats() {}

    static void reject(String reason, String detail, JsonNode id) {
        if (reason.equals("duplicate")) {
            DUPLICATES.increment();
        } else {
            REJECTED.increment();
        }
        // The first few, then every 10,000th: a log, not a dead-letter topic.
        long n = LOGGED.incrementAndGet();
        if (n <= 20 || n % 10_000 == 0) {
            System.err.printf("peer: rejected %s (%s): %s%n",
                id == null ? "null" : id.toString(), reason, detail);
        }
    }

    static void keyMismatch(String key, String customer) {
        if (MISMATCH.compareAndSet(false, true)) {
            System.err.printf("peer: warning: record key %s is not data.customer %s; the peer's state is "
                + "partitioned by the key, so keep key = customer%n", key, customer);
        }
    }

    static void firstOutput() {
        if (!FIRST.get() && FIRST.compareAndSet(false, true)) {
            System.err.printf("peer: first award forwarded %.2f s after start%n", seconds());
        }
    }

    static double seconds() {
        return (System.nanoTime() - START) / 1e9;
    }

    static String line() {
        return String.format("processed=%d awards=%d duplicates=%d rejected=%d ignored=%d capped_out=%d",
            PROCESSED.sum(), AWARDS.sum(), DUPLICATES.sum(), REJECTED.sum(), IGNORED.sum(), CAPPED_OUT.sum());
    }
}
