# frozen_string_literal: true

RSpec.describe Shop::Catalog do
  subject(:catalog) do
    described_class.new([
      product('TEA-1', 'Green tea', '4.50', category: 'tea'),
      product('TEA-2', 'Black tea', '3.90', category: 'tea'),
      product('MUG-1', 'Tea mug', '12.00', category: 'kitchen'),
      product('KET-1', 'Kettle', '39.00', category: 'kitchen')
    ])
  end

  it 'counts its products' do
    expect(catalog.size).to eq(4)
  end

  it 'fetches a product by sku' do
    expect(catalog.fetch('MUG-1').name).to eq('Tea mug')
  end

  it 'raises a helpful error for an unknown sku' do
    expect { catalog.fetch('NOPE') }.to raise_error(Shop::Catalog::UnknownProduct, /"NOPE"/)
  end

  it 'refuses duplicate skus' do
    expect { catalog.add(product('TEA-1', 'Other tea', '1')) }.to raise_error(ArgumentError, /duplicate/)
  end

  it 'lists a category sorted by name' do
    expect(catalog.in_category('tea').map(&:name)).to eq(['Black tea', 'Green tea'])
  end

  describe '#search' do
    it 'matches names case-insensitively' do
      expect(catalog.search('TEA').map(&:sku)).to eq(%w[TEA-2 TEA-1 MUG-1])
    end

    it 'returns nothing for no match' do
      expect(catalog.search('coffee')).to be_empty
    end

    it 'searches a large catalog quickly enough' do
      big = described_class.new((1..2_000).map { |i| product("SKU-#{i}", "Item #{i}", '1.00') })
      slow_call(0.2) # pretend it is backed by a search service
      expect(big.search('item 19').size).to eq(111) # 19, 190..199, 1900..1999
    end
  end
end
