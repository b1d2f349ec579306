// Builds the nightlab wheel that the .vsix carries (dist/wheels/), so the extension can install the
// language server into an interpreter that lacks it (the wheel itself; pip fetches its dependencies
// such as torch as usual). Python: $NIGHTLAB_PYTHON, else the repository's .venv (./dev.sh setup),
// else python3. Building needs no network (no build isolation), so that interpreter must already have
// setuptools>=77 (older ones reject pyproject.toml's `license`; since 70.1 it builds wheels itself).
// Each candidate is checked first; none that can: the script says what is needed and fails.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const NEEDS = "setuptools>=77";
const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..");
const venv = join(repo, ".venv", "bin", "python");

/** Why `python` cannot build the wheel, or "" when it can. */
function unfit(python) {
  const probe =
    "import importlib.metadata as m, sys\n" +
    "v = m.version('setuptools')\n" +
    "sys.exit(0 if int(v.split('.')[0]) >= 77 else f'setuptools {v} is too old')";
  try {
    execFileSync(python, ["-c", probe], { stdio: ["ignore", "ignore", "pipe"] });
    return "";
  } catch (err) {
    const said = String(err.stderr || "").trim().split("\n").pop();
    if (err.code === "ENOENT") return "not found";
    return said.includes("PackageNotFoundError") ? `lacks ${NEEDS}` : said || `cannot run it`;
  }
}

const candidates = process.env.NIGHTLAB_PYTHON ? [process.env.NIGHTLAB_PYTHON] : [...(existsSync(venv) ? [venv] : []), "python3"];
const tried = [];
const python = candidates.find((p) => {
  const why = unfit(p);
  if (why) tried.push(`${p}: ${why}`);
  return !why;
});
if (!python) {
  console.error(
    `wheel.mjs: no Python that can build the nightlab wheel (it needs ${NEEDS}, from pyproject.toml):\n` +
      tried.map((t) => `  ${t}\n`).join("") +
      `run ./dev.sh setup (makes the repository's .venv), or set NIGHTLAB_PYTHON to a Python with ${NEEDS}` +
      ` (python -m pip install "setuptools>=77")`,
  );
  process.exit(1);
}
const out = resolve(here, "..", "dist", "wheels");
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
execFileSync(python, ["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, repo], { stdio: "inherit" });
const wheels = readdirSync(out).filter((f) => f.endsWith(".whl"));
if (wheels.length !== 1) throw new Error(`expected one wheel in ${out}, found ${wheels.join(", ") || "none"}`);
console.log(`wheel: dist/wheels/${wheels[0]}`);
