// Package semconvtest stands in for a module only the tests of a collector component
// import, which the Go module proxy here does not serve (see ../../builder.yaml).
package semconvtest
