// Package openapicheck holds only tests. It checks adminhttp's OpenAPI
// document with an independent OpenAPI 3.1 implementation (libopenapi and
// its validator), in a module of its own so that the library's module
// never requires it.
package openapicheck
