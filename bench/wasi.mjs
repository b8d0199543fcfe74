// Runs a wasm32-wasip1 program in node's WASI: V8, the Wasm engine Envoy embeds.
// `make bench-core-wasm` runs crates/core/examples/wasm_decide.rs with it.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';

const wasi = new WASI({ version: 'preview1', args: [], env: {} });
const module = await WebAssembly.compile(await readFile(process.argv[2]));
wasi.start(await WebAssembly.instantiate(module, wasi.getImportObject()));
