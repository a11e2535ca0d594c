#!/usr/bin/env node
// g2c-agent from npm: runs the native agent binary carried by the platform package for this
// OS and CPU (an optional dependency at the same version). Nothing is downloaded at install
// or run time. Signals are forwarded, so `g2c-agent run` drains on Ctrl-C / SIGTERM.
"use strict";

const { spawn } = require("child_process");
const fs = require("fs");
const path = require("path");

const PLATFORMS = {
  "linux-x64": "ground2cloud-agent-linux-x64",
};

const platform = `${process.platform}-${process.arch}`;
const pkg = PLATFORMS[platform];
if (!pkg) {
  console.error(
    `g2c-agent: no prebuilt agent for ${platform} (available: ${Object.keys(PLATFORMS).join(", ")})`
  );
  process.exit(1);
}
const exe = process.platform === "win32" ? "g2c-agent.exe" : "g2c-agent";

function locate() {
  try {
    // Installed as this package's optional dependency.
    return path.join(path.dirname(require.resolve(`${pkg}/package.json`)), "bin", exe);
  } catch (_) {
    // Installed side by side (e.g. both tarballs given to `npm install -g`).
    const sibling = path.join(__dirname, "..", "..", pkg, "bin", exe);
    return fs.existsSync(sibling) ? sibling : null;
  }
}

const bin = locate();
if (!bin || !fs.existsSync(bin)) {
  console.error(
    `g2c-agent: the platform package ${pkg} for ${platform} is not installed; ` +
      `install it next to ground2cloud-agent (npm install ${pkg})`
  );
  process.exit(1);
}

const child = spawn(bin, process.argv.slice(2), { stdio: "inherit" });
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, () => child.kill(sig));
}
child.on("error", (err) => {
  console.error(`g2c-agent: cannot run ${bin}: ${err.message}`);
  process.exit(1);
});
child.on("exit", (code, signal) => {
  process.exit(code === null ? (signal ? 1 : 0) : code);
});
