// Package crosstest holds the tests that need both adapters and the HTTP
// middleware at once.
package crosstest
