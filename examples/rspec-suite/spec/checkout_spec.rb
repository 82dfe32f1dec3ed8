# frozen_string_literal: true

require 'fileutils'
require 'timeout'

# "Integration" examples: each waits on a pretend slow service, so running them on several
# workers is visibly faster than one after the other.
RSpec.describe 'Checkout' do
  let(:catalog) do
    Shop::Catalog.new([
      product('TEA-1', 'Green tea', '4.50', category: 'tea'),
      product('KET-1', 'Kettle', '39.00', category: 'kitchen')
    ])
  end
  let(:cart) { Shop::Cart.new(tax_rate: 0.05) }

  it 'builds an order from catalog skus' do
    slow_call(0.3)
    %w[TEA-1 TEA-1 KET-1].each { |sku| cart.add(catalog.fetch(sku)) }
    expect(cart.subtotal.to_s).to eq('$48.00')
  end

  it 'prints a receipt line per item' do
    slow_call(0.15)
    cart.add(catalog.fetch('KET-1'))
    lines = cart.items.map { |i| "#{i.quantity} x #{i.product.name}: #{i.total}" }
    expect(lines).to eq(['1 x Kettle: $39.00'])
  end

  it 'applies a minimum-spend code at checkout' do
    slow_call(0.25)
    cart.add(catalog.fetch('KET-1'), 2).apply(Shop::Discount::Fixed.new('BIG', usd('10'), minimum: usd('50')))
    expect(cart.total.to_s).to eq('$71.40')
  end

  it 'splits the bill between friends' do
    slow_call(0.1)
    cart.add(catalog.fetch('TEA-1'), 3)
    shares = cart.total.allocate(4)
    expect(shares.map(&:to_s)).to eq(%w[$3.55 $3.55 $3.54 $3.54])
  end

  # Flaky on purpose, to show Warren's retries: the payment "sandbox" times out on the first
  # attempt of a run (a marker file under $FLAKY_STATE_DIR remembers it), then works.
  # Without FLAKY_STATE_DIR it always passes.
  it 'charges the card through the payment sandbox' do |example|
    slow_call(0.2)
    dir = ENV['FLAKY_STATE_DIR']
    if dir && !dir.empty?
      marker = File.join(dir, "demo-flaky-#{example.id.gsub(/[^A-Za-z0-9]+/, '_')}")
      unless File.exist?(marker)
        FileUtils.mkdir_p(dir)
        File.write(marker, "first attempt failed\n")
        raise Timeout::Error, 'payment sandbox did not answer within 0.2 s'
      end
    end
    cart.add(catalog.fetch('TEA-1'))
    expect(cart.total.to_s).to eq('$4.73')
  end
end
