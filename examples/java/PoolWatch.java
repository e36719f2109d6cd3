// A HikariCP pool that keeps serving through password rotations.
//
// A thread long-polls credential-broker (GET /credentials/{db}?format=jdbc&wait=30s with
// If-None-Match). When the version changes, the pool's user name and password are replaced at
// run time (HikariConfigMXBean; the pool opens connections through a PGSimpleDataSource, which
// gets them for each new connection), so new connections use them, and the connections opened with
// the old password are soft-evicted: idle ones closed at once, busy ones when returned. A query
// whose connection could not be opened because the login was rejected (the rotation reached the
// database before the broker) refreshes the credentials and is retried once.
//
// Environment: as BrokerClient (BROKER_URL, BROKER_TOKEN_FILE or BROKER_TOKEN, BROKER_DB), and
// RUN_SECONDS (how long to run queries; 0, the default: until the JVM is stopped) and QUERY_RATE
// (queries a second, default 50). Prints JSON lines, never a password:
//   {"event":"ready","version_id":...}                     the pool is open
//   {"event":"switched","version_id":...,"via":"watch"}    new connections use a new version
//   {"event":"done","queries":N,"failed":F,"switches":S}   at the end; the exit status is 1 if F > 0
//
//   CP=postgresql.jar:HikariCP.jar:slf4j-api.jar:slf4j-simple.jar   (Debian: /usr/share/java)
//   javac -cp $CP -d out BrokerClient.java PoolWatch.java && java -cp out:$CP PoolWatch orders

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.postgresql.ds.PGSimpleDataSource;

public final class PoolWatch {
    private static final int POOL_SIZE = 4;
    private static final int WORKERS = 2;
    private static final int WAIT_SECONDS = 30;
    private static final String APPLICATION_NAME = "pool-watch-java";

    /** A JDBC URL split into the URL without credentials, the user name and the password. */
    record Login(String url, String user, String password, String versionId) {
        static Login of(BrokerClient.Credentials creds) {
            String[] parts = creds.jdbcUrl().split("\\?", 2);
            String user = null;
            String password = null;
            StringBuilder rest = new StringBuilder();
            for (String param : parts.length > 1 ? parts[1].split("&") : new String[0]) {
                String[] kv = param.split("=", 2);
                String value = kv.length > 1 ? URLDecoder.decode(kv[1], StandardCharsets.UTF_8) : "";
                switch (kv[0]) {
                    case "user" -> user = value;
                    case "password" -> password = value;
                    default -> rest.append(rest.length() == 0 ? "?" : "&").append(param);
                }
            }
            return new Login(parts[0] + rest, user, password, creds.versionId());
        }

        @Override
        public String toString() {
            return "Login[version_id=" + versionId + "]";
        }
    }

    private final BrokerClient broker;
    private final HikariDataSource pool;
    private volatile Login login;
    private final AtomicLong switches = new AtomicLong();

    PoolWatch(BrokerClient broker, Login login) {
        this.broker = broker;
        this.login = login;
        // A DataSource rather than a JDBC URL: HikariCP 2.7 hands a DataSource the user name and
        // password it holds now for every new connection, whereas its URL-based driver keeps the
        // ones it started with.
        PGSimpleDataSource postgres = new PGSimpleDataSource();
        postgres.setUrl(login.url());
        postgres.setApplicationName(APPLICATION_NAME);
        postgres.setConnectTimeout(5);
        HikariConfig config = new HikariConfig();
        config.setDataSource(postgres);
        config.setUsername(login.user());
        config.setPassword(login.password());
        config.setMaximumPoolSize(POOL_SIZE);
        config.setMinimumIdle(POOL_SIZE);
        config.setConnectionTimeout(5_000);
        config.setPoolName("pool-watch");
        this.pool = new HikariDataSource(config);
    }

    /** Switches to {@code creds} if they are another version; retires the old connections. */
    synchronized void update(BrokerClient.Credentials creds, String via) {
        if (creds == null || creds.versionId().equals(login.versionId())) {
            return;
        }
        Login next = Login.of(creds);
        pool.getHikariConfigMXBean().setUsername(next.user());
        pool.getHikariConfigMXBean().setPassword(next.password());
        login = next;
        switches.incrementAndGet();
        emit("{\"event\":\"switched\",\"version_id\":" + BrokerClient.jsonString(next.versionId())
                + ",\"via\":\"" + via + "\"}");
        pool.getHikariPoolMXBean().softEvictConnections();
    }

    /** Long-polls the broker until {@code stop} counts down; errors wait a second and go on. */
    void watch(CountDownLatch stop) {
        while (stop.getCount() > 0) {
            try {
                update(broker.waitForChange(login.versionId(), WAIT_SECONDS), "watch");
            } catch (Exception e) {
                System.err.println("pool_watch: watching the broker: " + e.getMessage());
                try {
                    stop.await(1, TimeUnit.SECONDS);
                } catch (InterruptedException interrupted) {
                    return;
                }
            }
        }
    }

    /** One query; a rejected login refreshes the credentials and the query is tried again. */
    void query() throws Exception {
        try {
            runQuery();
        } catch (SQLException e) {
            if (!rejectedLogin(e)) {
                throw e;
            }
            String failed = login.versionId();
            System.err.println("pool_watch: login rejected with version " + failed + ", refreshing");
            broker.refresh(failed);
            update(broker.credentials(), "refresh");
            runQuery();
        }
    }

    private void runQuery() throws SQLException {
        try (Connection c = pool.getConnection(); Statement st = c.createStatement()) {
            st.execute("SELECT 1");
        }
    }

    /** Whether {@code e}, or what caused it (HikariCP wraps it), is a rejected login. */
    private static boolean rejectedLogin(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof SQLException sql && BrokerClient.isAuthFailure(sql)) {
                return true;
            }
        }
        return false;
    }

    private static void emit(String line) {
        synchronized (System.out) {
            System.out.println(line);
            System.out.flush();
        }
    }

    public static void main(String[] args) throws Exception {
        BrokerClient broker;
        PoolWatch watch;
        try {
            broker = BrokerClient.fromEnv(args.length > 0 ? args[0] : null);
            watch = new PoolWatch(broker, Login.of(broker.credentials()));
        } catch (Exception e) {
            System.err.println("pool_watch: " + e.getMessage());
            System.exit(1);
            return;
        }
        double runSeconds = Double.parseDouble(envOr("RUN_SECONDS", "0"));
        double rate = Double.parseDouble(envOr("QUERY_RATE", "50"));
        long intervalNanos = (long) (WORKERS * 1e9 / rate);
        emit("{\"event\":\"ready\",\"version_id\":"
                + BrokerClient.jsonString(watch.login.versionId()) + "}");
        CountDownLatch stop = new CountDownLatch(1);
        Thread watcher = new Thread(() -> watch.watch(stop), "broker-watch");
        watcher.setDaemon(true);
        watcher.start();
        AtomicLong queries = new AtomicLong();
        AtomicLong failed = new AtomicLong();
        List<Thread> workers = new ArrayList<>();
        for (int i = 0; i < WORKERS; i++) {
            Thread worker = new Thread(() -> {
                while (stop.getCount() > 0) {
                    long started = System.nanoTime();
                    try {
                        watch.query();
                        queries.incrementAndGet();
                    } catch (Exception e) {
                        failed.incrementAndGet();
                        System.err.println("pool_watch: query failed: " + e.getMessage());
                    }
                    long left = intervalNanos - (System.nanoTime() - started);
                    try {
                        stop.await(Math.max(left, 0), TimeUnit.NANOSECONDS);
                    } catch (InterruptedException e) {
                        return;
                    }
                }
            }, "query-" + i);
            worker.start();
            workers.add(worker);
        }
        if (runSeconds > 0) {
            stop.await((long) (runSeconds * 1000), TimeUnit.MILLISECONDS);
        } else {
            stop.await();
        }
        stop.countDown();
        for (Thread worker : workers) {
            worker.join();
        }
        watch.pool.close();
        emit("{\"event\":\"done\",\"queries\":" + queries.get() + ",\"failed\":" + failed.get()
                + ",\"switches\":" + watch.switches.get() + "}");
        System.exit(failed.get() > 0 ? 1 : 0);
    }

    private static String envOr(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }
}
