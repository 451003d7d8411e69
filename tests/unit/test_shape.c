/* test_shape.c — placeholder: the shape module's unit tests land with the module. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include "shape.h"

static void test_header_compiles(void **state)
{
	(void)state;
	assert_true(sizeof(struct shape_config) > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = { cmocka_unit_test(test_header_compiles) };
	return cmocka_run_group_tests(tests, NULL, NULL);
}
