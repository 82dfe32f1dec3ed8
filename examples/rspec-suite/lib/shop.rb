# frozen_string_literal: true

require_relative 'shop/money'
require_relative 'shop/money_formatter'
require_relative 'shop/product'
require_relative 'shop/catalog'
require_relative 'shop/discount'
require_relative 'shop/cart'
