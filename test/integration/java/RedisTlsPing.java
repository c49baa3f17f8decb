import java.io.ByteArrayOutputStream;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.security.KeyStore;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;

/**
 * A Redis client reduced to what the app's TLS setup depends on: trust from a
 * PKCS12 truststore only, hostname verification as HTTPS does it, AUTH with an
 * ACL user, PING.
 *
 * Usage: java RedisTlsPing TRUSTSTORE SERVER_NAME PORT USER [CONNECT_ADDRESS]
 * SERVER_NAME is the name or address the certificate must match; the TCP
 * connection goes to CONNECT_ADDRESS (default SERVER_NAME). Passwords come
 * from the environment: TRUSTSTORE_PASSWORD and REDIS_PASSWORD.
 *
 * Prints one line and exits 0 on PONG, 2 on a TLS failure, 3 when Redis
 * refuses the AUTH or PING, 4 when the truststore cannot be loaded.
 */
public final class RedisTlsPing {
  public static void main(String[] args) throws Exception {
    if (args.length < 4) {
      System.err.println("usage: RedisTlsPing TRUSTSTORE SERVER_NAME PORT USER [CONNECT_ADDRESS]");
      System.exit(64);
    }
    String truststore = args[0];
    String serverName = args[1];
    int port = Integer.parseInt(args[2]);
    String user = args[3];
    String address = args.length > 4 ? args[4] : serverName;
    String storePassword = System.getenv("TRUSTSTORE_PASSWORD");
    String password = System.getenv("REDIS_PASSWORD");
    if (storePassword == null || password == null) {
      System.err.println("TRUSTSTORE_PASSWORD and REDIS_PASSWORD must be set");
      System.exit(64);
    }

    KeyStore ks = KeyStore.getInstance("PKCS12");
    try (InputStream in = new FileInputStream(truststore)) {
      ks.load(in, storePassword.toCharArray());
    } catch (IOException e) {
      System.out.println("TRUSTSTORE_FAILED " + e.getMessage());
      System.exit(4);
    }
    int trusted = 0;
    for (String alias : java.util.Collections.list(ks.aliases())) {
      if (ks.isCertificateEntry(alias)) trusted++;
    }
    TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
    tmf.init(ks);
    SSLContext ctx = SSLContext.getInstance("TLS");
    ctx.init(null, tmf.getTrustManagers(), null);

    Socket raw = new Socket();
    raw.connect(new InetSocketAddress(address, port), 5000);
    SSLSocket socket = (SSLSocket) ctx.getSocketFactory().createSocket(raw, serverName, port, true);
    SSLParameters params = socket.getSSLParameters();
    params.setEndpointIdentificationAlgorithm("HTTPS");
    socket.setSSLParameters(params);
    socket.setSoTimeout(5000);
    try {
      socket.startHandshake();
    } catch (SSLException e) {
      Throwable root = e;
      while (root.getCause() != null) root = root.getCause();
      System.out.println("TLS_FAILED trusted=" + trusted + " " + e.getMessage() + " | " + root.getMessage());
      System.exit(2);
    }

    OutputStream out = socket.getOutputStream();
    InputStream in = socket.getInputStream();
    out.write(command("AUTH", user, password));
    out.flush();
    String auth = readLine(in);
    if (!auth.equals("+OK")) {
      System.out.println("AUTH_FAILED " + auth);
      System.exit(3);
    }
    out.write(command("PING"));
    out.flush();
    String pong = readLine(in);
    if (!pong.equals("+PONG")) {
      System.out.println("PING_FAILED " + pong);
      System.exit(3);
    }
    System.out.println("PONG " + socket.getSession().getProtocol() + " trusted=" + trusted);
    socket.close();
  }

  private static byte[] command(String... words) {
    ByteArrayOutputStream b = new ByteArrayOutputStream();
    b.writeBytes(("*" + words.length + "\r\n").getBytes(StandardCharsets.US_ASCII));
    for (String w : words) {
      byte[] bytes = w.getBytes(StandardCharsets.UTF_8);
      b.writeBytes(("$" + bytes.length + "\r\n").getBytes(StandardCharsets.US_ASCII));
      b.writeBytes(bytes);
      b.writeBytes("\r\n".getBytes(StandardCharsets.US_ASCII));
    }
    return b.toByteArray();
  }

  private static String readLine(InputStream in) throws IOException {
    ByteArrayOutputStream b = new ByteArrayOutputStream();
    int prev = -1;
    for (;;) {
      int c = in.read();
      if (c < 0) throw new IOException("connection closed by server");
      if (prev == '\r' && c == '\n') break;
      if (prev >= 0) b.write(prev);
      prev = c;
    }
    return b.toString(StandardCharsets.UTF_8);
  }
}
