const ms = require('ms');
console.log(`kiln suite app: one day is ${ms('1d')} ms`);
