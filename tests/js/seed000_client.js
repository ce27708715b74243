// Seed 000's "JavaScript/Node.js Client" example, verbatim. tests/test_seed_examples.py runs a copy with the
// base URL pointed at a live test server (the only change), with axios from this folder's node_modules.
const axios = require('axios');

const API_BASE = 'http://127.0.0.1:8000/api/v1';

async function runBacktest() {
  // Start backtest
  const { data: startResult } = await axios.post(`${API_BASE}/run/backtest`, {
    strategy_name: 'TestStrategy',
    symbols: ['BTC/USDT'],
    timeframe: '1h',
    initial_cash: 10000.0
  });

  console.log(`Backtest started: ${startResult.run_id}`);

  // Monitor progress
  while (true) {
    const { data: status } = await axios.get(`${API_BASE}/status`);
    console.log(`Status: ${status.status}`);

    if (['completed', 'failed'].includes(status.status)) {
      break;
    }

    await new Promise(resolve => setTimeout(resolve, 1000));
  }

  // Get results
  const { data: results } = await axios.get(`${API_BASE}/results`);
  console.log(`Final value: $${results.final_value}`);
}

runBacktest().catch(console.error);
