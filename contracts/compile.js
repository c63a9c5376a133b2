#!/usr/bin/env node
// Compiles ProvenanceAnchor.sol with the pinned solc-js (package.json: solc 0.8.37) and fixed
// settings, and writes the artifact the Python client loads (anchoring/artifacts/ProvenanceAnchor.json).
//
//   node compile.js                 write the artifact
//   node compile.js --out FILE      write it elsewhere (the reproducibility test uses this)
//   node compile.js --stdout        print it
//
// The output is deterministic: same compiler, same settings, same source -> same bytes, so a test
// can recompile and require the committed artifact to be identical.
"use strict";

const fs = require("fs");
const path = require("path");
const solc = require("solc");

const PINNED_VERSION = "0.8.37";
const SOURCE_NAME = "ProvenanceAnchor.sol"; // relative, so the metadata hash does not depend on the checkout path
const CONTRACT = "ProvenanceAnchor";

// Fixed settings; they are recorded in the artifact. evmVersion is pinned rather than left to the
// compiler default so that a compiler default change cannot silently change the bytecode.
const SETTINGS = {
  optimizer: { enabled: true, runs: 10000 },
  evmVersion: "cancun",
  metadata: { bytecodeHash: "ipfs", appendCBOR: true },
  outputSelection: { [SOURCE_NAME]: { [CONTRACT]: ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

function fail(message) {
  process.stderr.write(`compile.js: ${message}\n`);
  process.exit(1);
}

function main(argv) {
  const version = solc.version();
  if (!version.startsWith(PINNED_VERSION + "+")) {
    fail(`solc-js ${version} is installed but ${PINNED_VERSION} is pinned; run scripts/bootstrap.sh`);
  }
  const here = __dirname;
  const source = fs.readFileSync(path.join(here, SOURCE_NAME), "utf8");
  const input = { language: "Solidity", sources: { [SOURCE_NAME]: { content: source } }, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  if (errors.length) fail(errors.map((e) => e.formattedMessage).join("\n"));
  const warnings = (output.errors || []).filter((e) => e.severity !== "error");
  if (warnings.length) fail("warnings are not accepted:\n" + warnings.map((e) => e.formattedMessage).join("\n"));
  const c = output.contracts[SOURCE_NAME][CONTRACT];
  const settings = { ...SETTINGS };
  delete settings.outputSelection; // what was asked for, not how the bytecode was made
  const artifact = {
    contractName: CONTRACT,
    sourceName: SOURCE_NAME,
    compiler: { name: "solc-js", version },
    settings,
    abi: c.abi,
    bytecode: "0x" + c.evm.bytecode.object,
    deployedBytecode: "0x" + c.evm.deployedBytecode.object,
  };
  const text = JSON.stringify(artifact, null, 2) + "\n";
  const outIndex = argv.indexOf("--out");
  if (argv.includes("--stdout")) {
    process.stdout.write(text);
  } else {
    const out = outIndex >= 0 ? argv[outIndex + 1] : path.join(here, "..", "anchoring", "artifacts", `${CONTRACT}.json`);
    if (!out) fail("--out needs a file name");
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, text);
    process.stderr.write(`compile.js: wrote ${out}\n`);
  }
}

main(process.argv.slice(2));
