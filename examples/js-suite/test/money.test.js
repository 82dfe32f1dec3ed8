'use strict';
const assert = require('node:assert/strict');
const { formatMoney } = require('../lib/shop');

describe('formatMoney', () => {
  it('formats whole amounts', () => assert.equal(formatMoney(1200), '12.00 EUR'));
  it('pads cents', () => assert.equal(formatMoney(105), '1.05 EUR'));
  it('groups thousands', () => assert.equal(formatMoney(123456789), '1,234,567.89 EUR'));
  it('keeps the sign of refunds', () => assert.equal(formatMoney(-250), '-2.50 EUR'));
  it('takes another currency', () => assert.equal(formatMoney(99, 'USD'), '0.99 USD'));
  it('refuses fractions of a cent', () => assert.throws(() => formatMoney(1.5), TypeError));
  for (const [cents, text] of [[0, '0.00 EUR'], [1, '0.01 EUR'], [10, '0.10 EUR'], [100000, '1,000.00 EUR']]) {
    it(`formats ${cents} as ${text}`, () => assert.equal(formatMoney(cents), text));
  }
});
