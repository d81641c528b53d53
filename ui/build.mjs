// After tsc: the static files and the vendored chart library next to the compiled modules, so that dist/ is the
// whole bundle (no CDN at run time; the runner and any static server serve it as it is).
import { cpSync, mkdirSync, rmSync } from "node:fs";

mkdirSync("dist/vendor", { recursive: true });
cpSync("static", "dist", { recursive: true });
cpSync("node_modules/uplot/dist/uPlot.esm.js", "dist/vendor/uPlot.esm.js");
cpSync("node_modules/uplot/dist/uPlot.min.css", "dist/vendor/uPlot.min.css");
cpSync("node_modules/uplot/LICENSE", "dist/vendor/uPlot.LICENSE");
