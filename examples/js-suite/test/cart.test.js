'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Catalog, Cart, percentOff, fixedOff } = require('../lib/shop');

const catalog = new Catalog([
  { sku: 'tea', name: 'Green tea', price: 450 },
  { sku: 'mug', name: 'Tea mug', price: 1200 },
]);

describe('Cart', () => {
  it('starts empty', () => assert.equal(new Cart(catalog).count, 0));
  it('adds quantities', () => assert.equal(new Cart(catalog).add('tea', 2).add('tea').count, 3));
  it('refuses a zero quantity', () => assert.throws(() => new Cart(catalog).add('tea', 0), RangeError));
  it('refuses unknown products', () => assert.throws(() => new Cart(catalog).add('cake'), /unknown sku/));
  it('removes a line', () => assert.equal(new Cart(catalog).add('tea').remove('tea').count, 0));
  it('sums the subtotal', () => assert.equal(new Cart(catalog).add('tea', 2).add('mug').subtotal, 2100));

  describe('discounts', () => {
    it('takes a percentage off', () => assert.equal(new Cart(catalog).add('mug').apply(percentOff(10)).total, 1080));
    it('takes a fixed amount over a minimum', () => assert.equal(new Cart(catalog).add('mug').apply(fixedOff(200, 1000)).total, 1000));
    it('ignores a fixed amount under the minimum', () => assert.equal(new Cart(catalog).add('tea').apply(fixedOff(200, 1000)).total, 450));
    it('never goes below zero', () => assert.equal(new Cart(catalog).add('tea').apply(fixedOff(10_000)).total, 0));
  });

  describe('checkout', () => {
    it('reserves stock (slow: talks to the warehouse)', async () => {
      await new Promise((r) => setTimeout(r, 250));
      assert.equal(new Cart(catalog).add('tea').count, 1);
    });
    it('charges the card through the payment sandbox', async function () {
      // The sandbox times out now and then: this test is flaky, the kind Warren re-runs.
      // With FLAKY_STATE_DIR set (npm run demo does), its first attempt fails.
      const dir = process.env.FLAKY_STATE_DIR;
      if (dir) {
        const marker = path.join(dir, 'payment-sandbox-answered');
        if (!fs.existsSync(marker)) {
          fs.writeFileSync(marker, 'x');
          throw new Error('payment sandbox did not answer within 200 ms');
        }
      }
      await new Promise((r) => setTimeout(r, 100));
    });
    it('sends a receipt', async () => {
      await new Promise((r) => setTimeout(r, 150));
    });
  });
});
