'use strict';
// A tiny shop: money in cents, a catalog, a cart with discounts.

function formatMoney(cents, currency = 'EUR') {
  if (!Number.isInteger(cents)) throw new TypeError(`cents must be an integer, got ${cents}`);
  const sign = cents < 0 ? '-' : '';
  const abs = Math.abs(cents);
  const units = String(Math.floor(abs / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return `${sign}${units}.${String(abs % 100).padStart(2, '0')} ${currency}`;
}

class Catalog {
  constructor(products = []) {
    this.products = new Map(products.map((p) => [p.sku, p]));
  }
  add(product) {
    if (this.products.has(product.sku)) throw new Error(`duplicate sku ${product.sku}`);
    this.products.set(product.sku, product);
  }
  find(sku) {
    const p = this.products.get(sku);
    if (!p) throw new Error(`unknown sku ${sku}`);
    return p;
  }
  search(text) {
    const t = text.toLowerCase();
    return [...this.products.values()].filter((p) => p.name.toLowerCase().includes(t));
  }
}

class Cart {
  constructor(catalog) {
    this.catalog = catalog;
    this.lines = new Map();
    this.discounts = [];
  }
  add(sku, quantity = 1) {
    if (quantity <= 0) throw new RangeError('quantity must be positive');
    this.catalog.find(sku);
    this.lines.set(sku, (this.lines.get(sku) ?? 0) + quantity);
    return this;
  }
  remove(sku) {
    this.lines.delete(sku);
    return this;
  }
  get count() {
    return [...this.lines.values()].reduce((a, b) => a + b, 0);
  }
  get subtotal() {
    let sum = 0;
    for (const [sku, q] of this.lines) sum += this.catalog.find(sku).price * q;
    return sum;
  }
  apply(discount) {
    this.discounts.push(discount);
    return this;
  }
  get total() {
    const off = this.discounts.reduce((acc, d) => acc + d(this), 0);
    return Math.max(0, this.subtotal - off);
  }
}

const percentOff = (pct) => (cart) => Math.round((cart.subtotal * pct) / 100);
const fixedOff = (cents, minimum = 0) => (cart) => (cart.subtotal >= minimum ? cents : 0);

module.exports = { formatMoney, Catalog, Cart, percentOff, fixedOff };
