import com.sun.source.util.JavacTask;
import java.io.File;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import javax.tools.Diagnostic;
import javax.tools.DiagnosticCollector;
import javax.tools.JavaCompiler;
import javax.tools.JavaFileObject;
import javax.tools.StandardJavaFileManager;
import javax.tools.ToolProvider;

/**
 * Parses Java sources with the JDK's own compiler front end, without resolving imports: a
 * syntax check for code whose dependencies (Spring, OpenTelemetry) cannot be downloaded here.
 * Run as `java ParseJava.java File.java...`; prints each syntax error and exits 1 if any.
 */
public class ParseJava {
    public static void main(String[] args) throws Exception {
        JavaCompiler compiler = ToolProvider.getSystemJavaCompiler();
        DiagnosticCollector<JavaFileObject> diagnostics = new DiagnosticCollector<>();
        List<File> files = new ArrayList<>();
        for (String a : args) {
            files.add(new File(a));
        }
        try (StandardJavaFileManager fm = compiler.getStandardFileManager(diagnostics, Locale.ROOT, null)) {
            Iterable<? extends JavaFileObject> units = fm.getJavaFileObjectsFromFiles(files);
            JavacTask task = (JavacTask) compiler.getTask(null, fm, diagnostics, List.of("--release", "17"), null, units);
            task.parse();
        }
        int errors = 0;
        for (Diagnostic<? extends JavaFileObject> d : diagnostics.getDiagnostics()) {
            if (d.getKind() == Diagnostic.Kind.ERROR) {
                errors++;
                System.out.printf("%s:%d: %s%n", d.getSource().getName(), d.getLineNumber(), d.getMessage(Locale.ROOT));
            }
        }
        System.out.printf("%d files parsed, %d syntax errors%n", files.size(), errors);
        System.exit(errors == 0 ? 0 : 1);
    }
}
