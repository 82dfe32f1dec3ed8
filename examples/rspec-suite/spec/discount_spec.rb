# frozen_string_literal: true

RSpec.describe Shop::Discount do
  describe Shop::Discount::Percentage do
    it 'takes a percentage off' do
      expect(described_class.new('TEN', 10).amount_off(usd('45.00'))).to eq(usd('4.50'))
    end

    it 'rounds to the cent' do
      expect(described_class.new('THIRD', 33).amount_off(usd('0.99'))).to eq(usd('0.33'))
    end

    it 'rejects percentages above 100' do
      expect { described_class.new('FREE+', 120) }.to raise_error(ArgumentError)
    end
  end

  describe Shop::Discount::Fixed do
    it 'takes a fixed amount off' do
      expect(described_class.new('FIVE', usd('5')).amount_off(usd('30'))).to eq(usd('5'))
    end

    it 'never takes off more than the subtotal' do
      expect(described_class.new('FIVE', usd('5')).amount_off(usd('3.20'))).to eq(usd('3.20'))
    end

    context 'with a minimum spend' do
      subject(:discount) { described_class.new('BIG', usd('10'), minimum: usd('50')) }

      it 'applies at or above the minimum' do
        expect(discount.amount_off(usd('50'))).to eq(usd('10'))
      end

      it 'does nothing below the minimum' do
        expect(discount.amount_off(usd('49.99'))).to be_zero
      end
    end
  end
end
