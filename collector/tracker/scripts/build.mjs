// Build dist/tracker.js from src/tracker.js: minified with esbuild (a build-time tool only;
// the output has no third-party code).
import { build } from "esbuild";

await build({
  entryPoints: ["src/tracker.js"],
  outfile: "dist/tracker.js",
  minify: true,
  target: ["es2017"],
  legalComments: "inline",
  logLevel: "warning",
});
