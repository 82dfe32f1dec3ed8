# frozen_string_literal: true

$LOAD_PATH.unshift(File.expand_path('../lib', __dir__))
require 'shop'

module ShopHelpers
  def usd(amount)
    Shop::Money.parse(amount.to_s, 'USD')
  end

  def product(sku, name, price, category: 'misc')
    Shop::Product.new(sku: sku, name: name, price: usd(price), category: category)
  end

  # Stands in for a slow dependency (a database, a payment sandbox): makes the run visibly parallel.
  def slow_call(seconds)
    sleep seconds
  end
end

RSpec.configure do |config|
  config.include ShopHelpers
  config.expect_with(:rspec) { |c| c.syntax = :expect }
  config.disable_monkey_patching!
  config.order = :defined
end
