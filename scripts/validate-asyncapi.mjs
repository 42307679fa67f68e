// Parses an AsyncAPI document with the official parser (@asyncapi/parser) and
// fails on any error it reports. scripts/test installs the parser into
// .cache/asyncapi-parser first.
//
//   node scripts/validate-asyncapi.mjs [specs/asyncapi.yaml]
//
// ASYNCAPI_PARSER_DIR names another folder holding node_modules/@asyncapi/parser.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const file = process.argv[2] ?? 'specs/asyncapi.yaml';
const parserDir = path.resolve(process.env.ASYNCAPI_PARSER_DIR ?? '.cache/asyncapi-parser');
const require = createRequire(path.join(parserDir, 'package.json'));
const { Parser } = require('@asyncapi/parser');

const SEVERITY = ['error', 'warning', 'info', 'hint'];

const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(file, 'utf8'), { source: file });
let errors = 0;
for (const d of diagnostics) {
  const severity = SEVERITY[d.severity] ?? String(d.severity);
  if (d.severity === 0) errors += 1;
  const at = (d.path ?? []).join('/');
  console.log(`${severity}: ${d.code}: ${d.message}${at ? ` (at /${at})` : ''}`);
}
if (errors > 0 || document === undefined) {
  console.error(`error: ${file} is not a valid AsyncAPI document (${errors} errors)`);
  process.exit(1);
}
const channels = document.channels().length;
const messages = document.components().messages().length;
console.log(`${file}: valid AsyncAPI ${document.version()}, ${channels} channels, ${messages} messages`);
