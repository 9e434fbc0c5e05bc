import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import org.apache.catalina.Context;
import org.apache.catalina.startup.Tomcat;

/**
 * An upstream for the path differential test (test/e2e/path-matching.test.ts): embedded
 * Tomcat with servlet mappings, so requests are routed the way Tomcat routes them (path
 * parameters dropped from every segment, dot segments resolved after that). Each answer
 * names the resource that served it in the x-resource header.
 *
 *   java -cp <tomcat jars>:<dir> PathServer <port> <base dir>
 */
public final class PathServer {
  public static void main(String[] args) throws Exception {
    if (args.length != 2) {
      System.err.println("usage: PathServer <port> <base dir>");
      System.exit(2);
    }
    Tomcat tomcat = new Tomcat();
    tomcat.setBaseDir(args[1]);
    tomcat.setPort(Integer.parseInt(args[0]));
    tomcat.getConnector().setProperty("address", "127.0.0.1");
    Context ctx = tomcat.addContext("", null);
    add(ctx, "admin", "/admin", "/admin/*");
    add(ctx, "public", "/public/*");
    add(ctx, "reports", "/public/reports", "/public/reports/*");
    add(ctx, "api", "/api/*");
    add(ctx, "health", "/health");
    add(ctx, "other", "/");
    tomcat.start();
    System.out.println("listening on 127.0.0.1:" + args[0]);
    tomcat.getServer().await();
  }

  private static void add(Context ctx, String name, String... patterns) {
    Tomcat.addServlet(ctx, name, new HttpServlet() {
      @Override
      protected void service(HttpServletRequest req, HttpServletResponse res) throws IOException {
        res.setHeader("x-resource", name);
        res.setContentType("application/json");
        res.getWriter().write("{\"resource\":\"" + name + "\"}");
      }
    });
    for (String p : patterns) ctx.addServletMappingDecoded(p, name);
  }
}
