// `petserve` without building dist/ (tests and benchmarks start worker processes this way):
//   node --import tsx src/cli/run-from-source.ts worker [worker flags]
// The same as bin/petserve.js, which runs the compiled dist/cli/main.js.
import { main } from './main.js';

process.exitCode = await main(process.argv);
