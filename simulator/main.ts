/**
 * The simulator on its own, before or besides the runner's CLI:
 *   npx tsx simulator/main.ts --devices 3 --rate 30 --count 300
 * takes the same flags as `runner simulate`.
 */
import { runSimulateCommand } from './cli.ts';

await runSimulateCommand(process.argv.slice(2));
