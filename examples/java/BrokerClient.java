// Connect to PostgreSQL with credentials from credential-broker, surviving a password rotation.
//
// Plain JDBC and the JDK's HttpClient, no other dependency than the PostgreSQL JDBC driver (no
// JSON library either: it asks the broker for `?format=jdbc` and reads the version from ETag).
// Fetches GET {BROKER_URL}/credentials/{db}?format=jdbc, connects, and when the login is rejected
// (SQLState 28P01 or 28000) calls POST /credentials/{db}/refresh once (If-Match: the version that
// failed), fetches again and connects again. Any other error, or a second rejection, is fatal.
//
// Environment: BROKER_URL (default http://127.0.0.1:2775), BROKER_TOKEN_FILE or BROKER_TOKEN,
// BROKER_DB (or the first argument). Prints one JSON line: {"user","refreshed","version_id"}.
//
//   javac -cp postgresql.jar -d out BrokerClient.java
//   java -cp out:postgresql.jar BrokerClient orders

import java.io.IOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.Driver;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Duration;
import java.util.Properties;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public final class BrokerClient {
    private static final Duration HTTP_TIMEOUT = Duration.ofSeconds(5);
    private static final String CONNECT_TIMEOUT_SECONDS = "5";
    /** 503 answers (overloaded, credentials_expired) are retried this often. */
    private static final int MAX_503_RETRIES = 5;
    /** A longer Retry-After is capped to this many seconds. */
    private static final long MAX_RETRY_AFTER_SECONDS = 5;
    /** invalid_password, invalid_authorization_specification. */
    private static final Set<String> AUTH_FAILURES = Set.of("28P01", "28000");
    private static final Pattern ERROR_CODE = Pattern.compile("\"code\"\\s*:\\s*\"([^\"]*)\"");
    private static final Pattern ERROR_MESSAGE =
            Pattern.compile("\"message\"\\s*:\\s*\"((?:[^\"\\\\]|\\\\.)*)\"");

    /** The broker answered with an error: HTTP status and the stable code from its JSON body. */
    public static final class BrokerException extends Exception {
        private static final long serialVersionUID = 1L;
        public final int status;
        public final String code;

        BrokerException(int status, String code, String message) {
            super("broker answered " + status + " " + code + ": " + message);
            this.status = status;
            this.code = code;
        }
    }

    /** A JDBC URL (it holds the password: never print it) and the version it belongs to. */
    public record Credentials(String jdbcUrl, String versionId) {
        @Override
        public String toString() {
            return "Credentials[version_id=" + versionId + "]";
        }
    }

    /** An open connection and how it was made. */
    public record Connected(Connection connection, String versionId, boolean refreshed) {}

    private final String baseUrl;
    private final String token;
    private final String db;
    // The broker is on localhost: no proxy, and plain HTTP/1.1 (no h2c upgrade attempt).
    private final HttpClient http = HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1)
            .proxy(HttpClient.Builder.NO_PROXY)
            .connectTimeout(HTTP_TIMEOUT)
            .build();

    public BrokerClient(String baseUrl, String token, String db) {
        this.baseUrl = baseUrl.replaceAll("/+$", "");
        this.token = token;
        this.db = db;
    }

    public static BrokerClient fromEnv(String db) throws IOException {
        String tokenFile = System.getenv("BROKER_TOKEN_FILE");
        String token = tokenFile != null && !tokenFile.isEmpty()
                ? Files.readString(Path.of(tokenFile)).strip()
                : orEmpty(System.getenv("BROKER_TOKEN")).strip();
        if (token.isEmpty()) {
            throw new IllegalArgumentException("set BROKER_TOKEN_FILE or BROKER_TOKEN");
        }
        if (db == null || db.isEmpty()) {
            db = orEmpty(System.getenv("BROKER_DB"));
        }
        if (db.isEmpty()) {
            throw new IllegalArgumentException("set BROKER_DB or pass the database name");
        }
        String url = orEmpty(System.getenv("BROKER_URL"));
        return new BrokerClient(url.isEmpty() ? "http://127.0.0.1:2775" : url, token, db);
    }

    /** The current credentials as a JDBC URL, with their version (from the ETag header). */
    public Credentials credentials() throws IOException, InterruptedException, BrokerException {
        HttpResponse<String> response = call("GET", "?format=jdbc", null);
        return new Credentials(response.body().strip(), versionOf(response));
    }

    /** Asks the broker to fetch again, naming the version the database rejected. */
    public void refresh(String failedVersion)
            throws IOException, InterruptedException, BrokerException {
        call("POST", "/refresh", failedVersion);
    }

    /**
     * A long poll: the credentials once the broker serves another version than {@code version},
     * or null when {@code waitSeconds} passed without a change (304).
     */
    public Credentials waitForChange(String version, int waitSeconds)
            throws IOException, InterruptedException, BrokerException {
        HttpResponse<String> response = send("GET", "?format=jdbc&wait=" + waitSeconds + "s",
                "If-None-Match", version, HTTP_TIMEOUT.plusSeconds(waitSeconds));
        return response.statusCode() == 304
                ? null
                : new Credentials(response.body().strip(), versionOf(response));
    }

    /** Connects, refreshing once if the database rejects the login. */
    public Connected connect()
            throws IOException, InterruptedException, BrokerException, SQLException {
        Credentials creds = credentials();
        try {
            return new Connected(open(creds), creds.versionId(), false);
        } catch (SQLException e) {
            if (!isAuthFailure(e)) {
                throw e;
            }
            System.err.println("broker_client: login rejected with version " + creds.versionId()
                    + ", refreshing");
        }
        refresh(creds.versionId());
        // The refresh put the new version in the broker's cache: this GET is served from it.
        creds = credentials();
        // A second rejection propagates: the broker has nothing newer to offer.
        return new Connected(open(creds), creds.versionId(), true);
    }

    /** Whether the database rejected the user name or password. */
    public static boolean isAuthFailure(SQLException e) {
        return e.getSQLState() != null && AUTH_FAILURES.contains(e.getSQLState());
    }

    private static Connection open(Credentials creds) throws SQLException {
        // DriverManager.getConnection would put the URL (and so the password) into its
        // "No suitable driver" message; asking the driver directly does not.
        Driver driver = DriverManager.getDriver(creds.jdbcUrl());
        Properties props = new Properties();
        props.setProperty("connectTimeout", CONNECT_TIMEOUT_SECONDS);
        props.setProperty("loginTimeout", CONNECT_TIMEOUT_SECONDS);
        Connection connection = driver.connect(creds.jdbcUrl(), props);
        if (connection == null) {
            throw new SQLException("the JDBC driver does not accept the broker's URL");
        }
        return connection;
    }

    private HttpResponse<String> call(String method, String suffix, String ifMatch)
            throws IOException, InterruptedException, BrokerException {
        return send(method, suffix, "If-Match", ifMatch, HTTP_TIMEOUT);
    }

    /** One request, 503s retried; {@code version} (if not null) goes in {@code header}. */
    private HttpResponse<String> send(String method, String suffix, String header, String version,
            Duration timeout) throws IOException, InterruptedException, BrokerException {
        String path = "/credentials/" + URLEncoder.encode(db, StandardCharsets.UTF_8);
        for (int attempt = 0; ; attempt++) {
            HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(baseUrl + path + suffix))
                    .timeout(timeout)
                    .header("Authorization", "Bearer " + token)
                    .method(method, HttpRequest.BodyPublishers.noBody());
            if (version != null) {
                request.header(header, "\"" + version + "\"");
            }
            HttpResponse<String> response =
                    http.send(request.build(), HttpResponse.BodyHandlers.ofString());
            int status = response.statusCode();
            if (status >= 200 && status < 300 || status == 304) {
                return response;
            }
            String code = match(ERROR_CODE, response.body(), "unknown");
            if (status == 503 && attempt < MAX_503_RETRIES) {
                long delay = retryAfter(response.headers().firstValue("Retry-After").orElse(null));
                System.err.println("broker_client: " + method + " " + path + suffix + ": 503 "
                        + code + ", retrying in " + delay + " s");
                Thread.sleep(delay * 1000);
                continue;
            }
            String message = match(ERROR_MESSAGE, response.body(), "HTTP " + status);
            throw new BrokerException(status, code, message);
        }
    }

    private static String versionOf(HttpResponse<String> response) throws IOException {
        String etag = response.headers().firstValue("ETag")
                .orElseThrow(() -> new IOException("the broker's answer has no ETag"));
        return etag.replaceAll("^\"|\"$", "");
    }

    /** Seconds to wait from a Retry-After header (delta-seconds), 1 when absent, capped. */
    static long retryAfter(String value) {
        try {
            return Math.min(Math.max(Long.parseLong(value.strip()), 0), MAX_RETRY_AFTER_SECONDS);
        } catch (NullPointerException | NumberFormatException e) {
            return 1;
        }
    }

    private static String match(Pattern pattern, String text, String fallback) {
        Matcher m = pattern.matcher(text == null ? "" : text);
        return m.find() ? m.group(1) : fallback;
    }

    private static String orEmpty(String s) {
        return s == null ? "" : s;
    }

    static String jsonString(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        return out.append('"').toString();
    }

    public static void main(String[] args) throws InterruptedException {
        try {
            BrokerClient client = fromEnv(args.length > 0 ? args[0] : null);
            Connected connected = client.connect();
            try (Connection c = connected.connection();
                    Statement st = c.createStatement();
                    ResultSet rs = st.executeQuery("SELECT current_user")) {
                rs.next();
                System.out.println("{\"user\":" + jsonString(rs.getString(1))
                        + ",\"refreshed\":" + connected.refreshed()
                        + ",\"version_id\":" + jsonString(connected.versionId()) + "}");
            }
        } catch (BrokerException | IllegalArgumentException e) {
            fail(e.getMessage());
        } catch (SQLException e) {
            // The driver's message names the user, never the password.
            fail("database error " + e.getSQLState() + ": " + e.getMessage());
        } catch (IOException e) {
            fail("broker unreachable: " + e);
        }
    }

    private static void fail(String message) {
        System.err.println("broker_client: " + message);
        System.exit(1);
    }
}
