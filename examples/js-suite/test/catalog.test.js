'use strict';
const assert = require('node:assert/strict');
const { Catalog } = require('../lib/shop');

const sample = () => new Catalog([
  { sku: 'tea', name: 'Green tea', price: 450 },
  { sku: 'mug', name: 'Tea mug', price: 1200 },
  { sku: 'pot', name: 'Coffee pot', price: 3000 },
]);

describe('Catalog', () => {
  it('finds a product by sku', () => assert.equal(sample().find('mug').price, 1200));
  it('refuses an unknown sku', () => assert.throws(() => sample().find('nope'), /unknown sku nope/));
  it('refuses a duplicate sku', () => assert.throws(() => sample().add({ sku: 'tea', name: 'x', price: 1 }), /duplicate/));
  describe('search', () => {
    it('matches case-insensitively', () => assert.equal(sample().search('TEA').length, 2));
    it('returns nothing for no match', () => assert.deepEqual(sample().search('juice'), []));
    it('is slow on a big catalog (indexing)', async () => {
      await new Promise((r) => setTimeout(r, 300));
      const big = new Catalog(Array.from({ length: 5000 }, (_, i) => ({ sku: `s${i}`, name: `item ${i}`, price: i })));
      assert.equal(big.search('item 4999').length, 1);
    });
  });
});
