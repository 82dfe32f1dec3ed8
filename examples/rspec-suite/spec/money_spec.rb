# frozen_string_literal: true

RSpec.describe Shop::Money do
  describe '.parse' do
    it 'reads dollars and cents' do
      expect(described_class.parse('12.34').cents).to eq(1234)
    end

    it 'reads whole amounts and single decimals' do
      expect(described_class.parse('7').cents).to eq(700)
      expect(described_class.parse('7.5').cents).to eq(750)
    end

    it 'reads negative amounts' do
      expect(described_class.parse('-0.99').cents).to eq(-99)
    end

    it 'rejects text that is not an amount' do
      expect { described_class.parse('twelve') }.to raise_error(ArgumentError, /not an amount/)
    end
  end

  describe 'arithmetic' do
    it 'adds amounts of the same currency' do
      expect(usd('1.10') + usd('2.25')).to eq(usd('3.35'))
    end

    it 'subtracts amounts' do
      expect(usd('5.00') - usd('7.50')).to eq(usd('-2.50'))
    end

    it 'multiplies and rounds to the cent' do
      expect(usd('0.99') * 3).to eq(usd('2.97'))
      expect(usd('10.00') * 0.0825).to eq(usd('0.83'))
    end

    it 'refuses to mix currencies' do
      expect { usd('1') + described_class.new(100, 'EUR') }
        .to raise_error(Shop::Money::CurrencyMismatch, /USD with EUR/)
    end
  end

  describe '#allocate' do
    it 'splits evenly when it can' do
      expect(usd('9.00').allocate(3).map(&:cents)).to eq([300, 300, 300])
    end

    it 'hands out leftover cents to the first parts' do
      parts = usd('10.00').allocate(3)
      expect(parts.map(&:cents)).to eq([334, 333, 333])
      expect(parts.reduce(:+)).to eq(usd('10.00'))
    end
  end

  it 'compares amounts' do
    expect(usd('2')).to be > usd('1.99')
    expect([usd('3'), usd('1'), usd('2')].max).to eq(usd('3'))
  end

  it 'is a value object' do
    expect(usd('1.00')).to eql(described_class.new(100, 'usd'))
    expect({ usd('1.00') => :a }[usd('1')]).to eq(:a)
    expect(usd('1.00')).to be_frozen
  end
end
