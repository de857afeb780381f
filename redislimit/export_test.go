package redislimit

// Keys returns the storage keys of a call's limits.
var Keys = (*Limiter).keys
