package apikey

// Defaults and bounds that the external tests check against; the package
// documents them on the option fields instead of exporting them.
const (
	DefaultBreakerCoolDown = defaultBreakerCoolDown
	DefaultBreakerFailures = defaultBreakerFailures
	DefaultLimiterTimeout  = defaultLimiterTimeout
	DefaultNegativeTTL     = defaultNegativeTTL
	DefaultPrefix          = defaultPrefix
	MaxPrefixLength        = maxPrefixLength
	MaxSecretBits          = maxSecretBits
	VersionBcrypt          = versionBcrypt
	VersionSHA256          = versionSHA256
)

// OutcomeOf names the outcome of err, as logs and Metrics.Verified do.
var OutcomeOf = outcomeOf
