# frozen_string_literal: true

RSpec.describe Shop::MoneyFormatter do
  subject(:formatter) { described_class.new }

  it 'formats dollars with a symbol and two decimals' do
    expect(formatter.format(usd('3'))).to eq('$3.00')
  end

  it 'groups thousands' do
    expect(formatter.format(usd('1234567.8'))).to eq('$1,234,567.80')
  end

  it 'puts the sign before the symbol' do
    expect(formatter.format(usd('-42.05'))).to eq('-$42.05')
  end

  it 'formats amounts under a dollar' do
    expect(formatter.format(usd('0.07'))).to eq('$0.07')
  end

  it 'knows euros and pounds' do
    expect(formatter.format(Shop::Money.new(250, 'EUR'))).to eq('€2.50')
    expect(formatter.format(Shop::Money.new(99_999, 'GBP'))).to eq('£999.99')
  end

  it 'falls back to the currency code' do
    expect(formatter.format(Shop::Money.new(1200, 'CHF'))).to eq('12.00 CHF')
  end

  context 'with European separators' do
    subject(:formatter) { described_class.new(thousands: '.', decimal: ',', symbol: false) }

    it 'swaps the separators and writes the code' do
      expect(formatter.format(Shop::Money.new(123_456, 'EUR'))).to eq('1.234,56 EUR')
    end
  end

  it 'is what Money#to_s uses' do
    expect(usd('19.99').to_s).to eq('$19.99')
  end
end
