# frozen_string_literal: true

RSpec.describe Shop::Cart do
  subject(:cart) { described_class.new }

  let(:tea) { product('TEA-1', 'Green tea', '4.50') }
  let(:mug) { product('MUG-1', 'Tea mug', '12.00') }

  it 'starts empty' do
    expect(cart).to be_empty
    expect(cart.total).to eq(usd('0'))
  end

  it 'adds products and sums them' do
    cart.add(tea, 2).add(mug)
    expect(cart.item_count).to eq(3)
    expect(cart.subtotal).to eq(usd('21.00'))
  end

  it 'merges repeated adds of the same product' do
    cart.add(tea).add(tea, 3)
    expect(cart.items.size).to eq(1)
    expect(cart.items.first.quantity).to eq(4)
  end

  it 'rejects a zero quantity' do
    expect { cart.add(tea, 0) }.to raise_error(ArgumentError, /positive/)
  end

  it 'rejects products priced in another currency' do
    croissant = Shop::Product.new(sku: 'CRO', name: 'Croissant', price: Shop::Money.new(180, 'EUR'))
    expect { cart.add(croissant) }.to raise_error(Shop::Money::CurrencyMismatch)
  end

  describe '#remove' do
    before { cart.add(tea, 3) }

    it 'removes some of a line' do
      cart.remove('TEA-1', 1)
      expect(cart.item_count).to eq(2)
    end

    it 'removes a whole line' do
      cart.remove('TEA-1')
      expect(cart).to be_empty
    end

    it 'ignores unknown skus' do
      expect { cart.remove('NOPE') }.not_to(change { cart.item_count })
    end
  end

  context 'with a discount and tax' do
    subject(:cart) { described_class.new(tax_rate: 0.08) }

    before { cart.add(mug, 2).apply(Shop::Discount::Percentage.new('TEN', 10)) }

    it 'taxes the discounted subtotal' do
      expect(cart.discount_amount).to eq(usd('2.40'))
      expect(cart.tax).to eq(usd('1.73'))
      expect(cart.total).to eq(usd('23.33'))
    end

    it 'forgets the discount when cleared' do
      cart.clear
      expect(cart.discount).to be_nil
      expect(cart.total).to eq(usd('0'))
    end
  end
end
