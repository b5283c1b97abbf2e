package dev.loyalty.peer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.core.io.JsonStringEncoder;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.TopologyConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.Stores;

/**
 * loyalty-peer: the engine's earning fold for one per_amount rule, as a Kafka Streams
 * application (see README.md next to this project).
 *
 * <pre>
 * loyalty-peer run   --bootstrap-servers H:P --program FILE [--input T] [--output T]
 *                    [--application-id ID] [--state-dir DIR] [--threads N] [--partitions N]
 *                    [--report-every SECONDS] [--set streams.config=value ...]
 * loyalty-peer dump  --bootstrap-servers H:P [--output T] [--timeout SECONDS]
 * loyalty-peer check --program FILE
 * </pre>
 * Every option also reads from the environment: PEER_BOOTSTRAP_SERVERS, PEER_INPUT_TOPIC,
 * PEER_OUTPUT_TOPIC, PEER_APPLICATION_ID, PEER_PROGRAM, PEER_STATE_DIR, PEER_THREADS.
 */
public final class Main {
    private static final String USAGE = String.join("\n",
        "usage: loyalty-peer run   --bootstrap-servers H:P --program FILE [--input payment.completed]",
        "                          [--output loyalty.peer.earned] [--application-id loyalty-peer]",
        "                          [--state-dir /tmp/loyalty-peer] [--threads 1] [--partitions 1]",
        "                          [--report-every 5] [--set KEY=VALUE ...]",
        "       loyalty-peer dump  --bootstrap-servers H:P [--output loyalty.peer.earned] [--timeout 60]",
        "       loyalty-peer check --program FILE",
        "Options fall back to PEER_BOOTSTRAP_SERVERS, PEER_INPUT_TOPIC, PEER_OUTPUT_TOPIC,",
        "PEER_APPLICATION_ID, PEER_PROGRAM, PEER_STATE_DIR, PEER_THREADS.");

    private Main() {}

    public static void main(String[] argv) throws Exception {
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }
        if (argv.length == 0) {
            System.err.println(USAGE);
            System.exit(2);
        }
        for (String a : argv) {
            if (a.equals("-h") || a.equals("--help")) {
                System.out.println(USAGE);
                System.exit(0);
            }
        }
        String cmd = argv[0];
        Map<String, String> opts = new HashMap<>();
        List<String> sets = new ArrayList<>();
        for (int i = 1; i < argv.length; i++) {
            String a = argv[i];
            if (!a.startsWith("--")) {
                die("unexpected argument " + a);
            }
            String k = a.substring(2);
            String v;
            int eq = k.indexOf('=');
            if (eq >= 0) {
                v = k.substring(eq + 1);
                k = k.substring(0, eq);
            } else if (i + 1 < argv.length) {
                v = argv[++i];
            } else {
                die("option --" + k + " needs a value");
                return;
            }
            if (k.equals("set")) {
                sets.add(v);
            } else {
                opts.put(k, v);
            }
        }
        switch (cmd) {
            case "run" -> run(opts, sets);
            case "dump" -> dump(opts);
            case "check" -> {
                Program p = loadProgram(opt(opts, "program", "PEER_PROGRAM", null));
                System.out.printf("ok: program %s, rule %s: floor(amount x %s / %s), cap %s (%s), currencies %s%n",
                    p.id, p.ruleId, p.num, p.den, p.cap < 0 ? "none" : Long.toString(p.cap),
                    p.window.name().toLowerCase(), p.currencies == null ? "all" : p.currencies);
            }
            default -> die("unknown command " + cmd);
        }
    }

    private static void die(String msg) {
        System.err.println("loyalty-peer: " + msg);
        System.err.println(USAGE);
        System.exit(2);
    }

    private static String opt(Map<String, String> opts, String name, String env, String dflt) {
        String v = opts.remove(name);
        if (v == null && env != null) {
            v = System.getenv(env);
        }
        if (v == null || v.isEmpty()) {
            v = dflt;
        }
        if (v == null) {
            die("missing --" + name + (env == null ? "" : " (or " + env + ")"));
        }
        return v;
    }

    private static void noMore(Map<String, String> opts) {
        if (!opts.isEmpty()) {
            die("unknown option --" + opts.keySet().iterator().next());
        }
    }

    private static Program loadProgram(String path) {
        try {
            return Program.load(Path.of(path));
        } catch (Program.ConfigException e) {
            System.err.println("loyalty-peer: program " + path + " refused: " + e.getMessage());
            System.exit(2);
        } catch (Exception e) {
            System.err.println("loyalty-peer: cannot read program " + path + ": " + e.getMessage());
            System.exit(2);
        }
        return null;
    }

    private static void run(Map<String, String> opts, List<String> sets) throws Exception {
        String bootstrap = opt(opts, "bootstrap-servers", "PEER_BOOTSTRAP_SERVERS", null);
        String input = opt(opts, "input", "PEER_INPUT_TOPIC", "payment.completed");
        String output = opt(opts, "output", "PEER_OUTPUT_TOPIC", "loyalty.peer.earned");
        String appId = opt(opts, "application-id", "PEER_APPLICATION_ID", "loyalty-peer");
        Program program = loadProgram(opt(opts, "program", "PEER_PROGRAM", null));
        String stateDir = opt(opts, "state-dir", "PEER_STATE_DIR", "/tmp/loyalty-peer");
        int threads = Integer.parseInt(opt(opts, "threads", "PEER_THREADS", "1"));
        int partitions = Integer.parseInt(opt(opts, "partitions", null, "1"));
        long reportEvery = Long.parseLong(opt(opts, "report-every", null, "5"));
        noMore(opts);

        ensureTopics(bootstrap, input, output, partitions);

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        // No global state here; set only to quiet Kafka Streams 4.x's start-up warning about it.
        p.put("processing.exception.handler.global.enabled", "true");
        for (String s : sets) {
            int eq = s.indexOf('=');
            if (eq <= 0) {
                die("--set needs KEY=VALUE, got " + s);
            }
            p.put(s.substring(0, eq), s.substring(eq + 1));
        }
        if (!StreamsConfig.EXACTLY_ONCE_V2.equals(p.get(StreamsConfig.PROCESSING_GUARANTEE_CONFIG))) {
            System.err.println("loyalty-peer: warning: processing.guarantee is not exactly_once_v2");
        }

        StreamsBuilder b = new StreamsBuilder(new TopologyConfig(new StreamsConfig(p)));
        b.addStateStore(Stores.keyValueStoreBuilder(
            Stores.persistentKeyValueStore(EarnProcessor.ACCOUNTS), Serdes.String(), Serdes.ByteArray()));
        b.addStateStore(Stores.keyValueStoreBuilder(
            Stores.persistentKeyValueStore(EarnProcessor.SEEN), Serdes.String(), Serdes.ByteArray()));
        b.stream(input, Consumed.with(Serdes.String(), Serdes.ByteArray()))
            .process(() -> new EarnProcessor(program), EarnProcessor.ACCOUNTS, EarnProcessor.SEEN)
            .to(output, Produced.with(Serdes.String(), Serdes.String()));
        Topology topology = b.build();

        KafkaStreams streams = new KafkaStreams(topology, p);
        CountDownLatch done = new CountDownLatch(1);
        int[] exit = {0};
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("loyalty-peer: stream thread failed: " + e);
            e.printStackTrace();
            exit[0] = 1;
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.setStateListener((now, before) -> {
            System.err.printf("peer: %s -> %s at %.2f s%n", before, now, Stats.seconds());
            if (now == KafkaStreams.State.NOT_RUNNING || now == KafkaStreams.State.ERROR) {
                done.countDown();
            }
        });
        Thread reporter = new Thread(() -> {
            long last = 0;
            double lastT = Stats.seconds();
            try {
                while (true) {
                    Thread.sleep(reportEvery * 1000);
                    long n = Stats.PROCESSED.sum();
                    double t = Stats.seconds();
                    if (n != last) {
                        System.err.printf("peer: %.1f s %s (%.0f records/s)%n", t, Stats.line(), (n - last) / (t - lastT));
                    }
                    last = n;
                    lastT = t;
                }
            } catch (InterruptedException e) {
                // stop
            }
        }, "peer-reporter");
        reporter.setDaemon(true);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(30));
            System.err.printf("peer: stopped at %.1f s: %s%n", Stats.seconds(), Stats.line());
        }, "peer-shutdown"));
        System.err.printf("peer: program %s rule %s, %s -> %s, application %s, state %s, exactly_once_v2%n",
            program.id, program.ruleId, input, output, appId, stateDir);
        reporter.start();
        streams.start();
        done.await();
        System.exit(exit[0]);
    }

    /** Creates the input (with `partitions`) and the output (as many as the input) if missing. */
    private static void ensureTopics(String bootstrap, String input, String output, int partitions) throws Exception {
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(ap)) {
            Set<String> names = admin.listTopics().names().get();
            if (!names.contains(input)) {
                create(admin, input, partitions);
            }
            int n = admin.describeTopics(List.of(input)).allTopicNames().get().get(input).partitions().size();
            if (!names.contains(output)) {
                create(admin, output, n);
            }
        }
    }

    private static void create(Admin admin, String topic, int partitions) throws Exception {
        try {
            admin.createTopics(List.of(new NewTopic(topic, partitions, (short) -1))).all().get();
            System.err.printf("peer: created topic %s with %d partition(s)%n", topic, partitions);
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof TopicExistsException)) {
                throw e;
            }
        }
    }

    /** Reads the output topic (committed records only) to its end; the last balance per customer. */
    private static void dump(Map<String, String> opts) throws Exception {
        String bootstrap = opt(opts, "bootstrap-servers", "PEER_BOOTSTRAP_SERVERS", null);
        String output = opt(opts, "output", "PEER_OUTPUT_TOPIC", "loyalty.peer.earned");
        long timeout = Long.parseLong(opt(opts, "timeout", null, "60"));
        noMore(opts);
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "5000");
        ObjectMapper json = new ObjectMapper();
        TreeMap<String, Long> balances = new TreeMap<>();
        long records = 0;
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p, new StringDeserializer(), new StringDeserializer())) {
            List<TopicPartition> tps = new ArrayList<>();
            List<PartitionInfo> infos = c.partitionsFor(output, Duration.ofSeconds(timeout));
            if (infos == null || infos.isEmpty()) {
                System.err.println("loyalty-peer: no topic " + output);
                System.exit(1);
            }
            for (PartitionInfo i : infos) {
                tps.add(new TopicPartition(output, i.partition()));
            }
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            long deadline = System.nanoTime() + timeout * 1_000_000_000L;
            while (true) {
                boolean atEnd = true;
                for (TopicPartition tp : tps) {
                    if (c.position(tp) < end.get(tp)) {
                        atEnd = false;
                    }
                }
                if (atEnd) {
                    break;
                }
                if (System.nanoTime() > deadline) {
                    System.err.println("loyalty-peer: timed out before the end of " + output);
                    System.exit(1);
                }
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(500))) {
                    JsonNode v = json.readTree(r.value());
                    balances.put(v.get("customer").textValue(), v.get("balance").longValue());
                    records++;
                }
            }
        }
        JsonStringEncoder esc = JsonStringEncoder.getInstance();
        StringBuilder sb = new StringBuilder();
        for (Map.Entry<String, Long> e : balances.entrySet()) {
            sb.append("{\"customer\":\"").append(esc.quoteAsString(e.getKey()))
                .append("\",\"balance\":").append(e.getValue()).append("}\n");
        }
        System.out.print(sb);
        System.out.flush();
        System.err.printf("peer dump: %d earned records, %d customers%n", records, balances.size());
    }
}
